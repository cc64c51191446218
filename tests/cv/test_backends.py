"""The cv (process per call) and pipe (pool of ``cv pipe``) backends through the gateway's HTTP
routes, against the cv stand-in: results, the error table, permissions, the context prefix,
site discovery, noise around the JSON, names, stats and start-up failures."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TRUSTED_TOKEN, assert_problem, trusted
from tests.cv.conftest import BACKENDS, Site, clients_file, cv_settings, gateway, write_script

pytestmark = pytest.mark.parametrize("backend", BACKENDS)


async def test_v4_crud_and_v3(site: Site, backend: str) -> None:
    async with gateway(cv_settings(site, backend)) as gw:
        created = await gw.post(
            "/v4/Contact/create",
            json={"values": {"contact_type": "Individual", "first_name": "Ada", "last_name": "Lovelace"}},
        )
        assert created.status_code == 200, created.text
        ada = created.json()[0]
        assert ada["display_name"] == "Ada Lovelace"
        got = await gw.post(
            "/v4/Contact/get",
            json={"select": ["id", "display_name"], "where": [["last_name", "=", "Lovelace"]]},
        )
        assert got.status_code == 200
        assert got.json() == [{"id": ada["id"], "display_name": "Ada Lovelace"}]
        assert got.headers["X-Result-Count"] == "1"
        simple = await gw.get("/v4/Contact/get", params={"id": str(ada["id"]), "select": "id,first_name"})
        assert simple.json() == [{"id": ada["id"], "first_name": "Ada"}]

        v3 = await gw.post("/v3/Contact/get", json={"id": ada["id"], "return": "display_name"})
        assert v3.status_code == 200, v3.text
        assert [r["display_name"] for r in v3.json()] == ["Ada Lovelace"]
        count = await gw.post("/v3/Contact/getcount", json={})
        assert count.json() == 4  # organisation, admin, staff, Ada
        single = await gw.post("/v3/Contact/getsingle", json={"id": ada["id"]})
        assert single.json()["display_name"] == "Ada Lovelace"
        value = await gw.post("/v3/Contact/getvalue", json={"id": ada["id"], "return": "last_name"})
        assert value.json() == "Lovelace"


async def test_error_table(site: Site, backend: str) -> None:
    async with gateway(cv_settings(site, backend)) as gw:
        body = assert_problem(await gw.post("/v4/Foo/get", json={}), 404, "unknown-api")
        assert body["detail"].startswith("API (Foo, get) does not exist")
        assert_problem(await gw.post("/v4/Contact/frobnicate", json={}), 404, "unknown-api")
        body = assert_problem(
            await gw.post("/v4/Contact/get", json={"where": [["no_such_field", "=", "x"]]}),
            400,
            "unknown-field",
        )
        assert body["detail"] == "Contact has no field 'no_such_field'."
        body = assert_problem(
            await gw.post("/v4/Contact/update", json={"values": {"first_name": "X"}}),
            400,
            "civicrm-bad-request",
        )
        assert body["detail"].startswith('Parameter "where" is required')
        body = assert_problem(
            await gw.post("/v3/Contact/create", json={"first_name": "x"}), 422, "civicrm-validation"
        )
        assert body["civicrm"]["error_code"] == "mandatory_missing"
        assert_problem(await gw.post("/v3/Foo/get", json={}), 404, "unknown-api")
        assert_problem(await gw.post("/v3/Contact/getsingle", json={"id": 999}), 404, "record-not-found")
        # names never reach an argv or a request unchecked
        assert_problem(await gw.post("/v4/Contact;rm/get", json={}), 400, "invalid-request")
        assert_problem(await gw.post("/v4/Contact/--help", json={}), 400, "invalid-request")
        # the backend refuses odd names itself too (defence in depth)
        from gateway.core.call import Call
        from gateway.core.errors import GatewayError

        with pytest.raises(GatewayError) as caught:
            # A Call built by hand, not parsed (parsing refuses such a name first)
            await gw.backend.call(Call(4, "Contact", "get --user=x"))  # type: ignore[attr-defined]
        assert caught.value.slug == "invalid-request"


async def test_permission_checks_forced(site: Site, backend: str) -> None:
    """As ``staff`` (access CiviCRM only), with checks forced on: a client cannot turn them
    off by sending checkPermissions false."""
    async with gateway(cv_settings(site, backend, cv_user="staff")) as gw:
        response = await gw.post(
            "/v4/Contact/create", json={"values": {"contact_type": "Individual", "first_name": "No"}}
        )
        body = assert_problem(response, 403, "civicrm-permission-denied")
        assert "may not run Contact.create" in body["detail"]
        # Asking for checks off is refused by the gateway before anything reaches cv (asked
        # with an action staff may run: CiviCRM 5.77's getActions lists update, not create).
        response = await gw.post(
            "/v4/Contact/update",
            json={
                "values": {"first_name": "No"},
                "where": [["first_name", "=", "Nobody"]],
                "checkPermissions": False,
            },
        )
        assert_problem(response, 403, "gateway-policy-denied")
        response = await gw.post(
            "/v3/Contact/create",
            json={"contact_type": "Individual", "first_name": "No", "check_permissions": 0},
        )
        assert_problem(response, 403, "gateway-policy-denied")
    assert site.count("Contact", [["first_name", "=", "No"]]) == 0


async def test_permission_checks_off_when_configured(site: Site, backend: str) -> None:
    """cv's own default (checks off) only when the operator says so: then even a user
    without permissions writes."""
    settings = cv_settings(site, backend, cv_user="staff", cv_check_permissions=False)
    async with gateway(settings) as gw:
        response = await gw.post(
            "/v4/Contact/create",
            json={"values": {"contact_type": "Individual", "first_name": "Yes"}, "checkPermissions": True},
        )
        assert response.status_code == 200, response.text
    assert site.count("Contact", [["first_name", "=", "Yes"]]) == 1


async def test_client_identity(site: Site, backend: str, tmp_path: Path) -> None:
    """A client with its own cv_user runs as that user; the others as the gateway's."""
    path, tokens = clients_file(tmp_path, boss=None, clerk="staff", ghost="ghost")
    async with gateway(cv_settings(site, backend, clients_file=path)) as gw:
        values = {"values": {"contact_type": "Individual", "first_name": "Who"}}
        clerk = await gw.post("/v4/Contact/create", json=values, headers={"Authorization": tokens["clerk"]})
        assert_problem(clerk, 403, "civicrm-permission-denied")
        boss = await gw.post("/v4/Contact/create", json=values, headers={"Authorization": tokens["boss"]})
        assert boss.status_code == 200, boss.text
        clerk = await gw.post("/v4/Contact/create", json=values, headers={"Authorization": tokens["clerk"]})
        assert_problem(clerk, 403, "civicrm-permission-denied")
        # a client whose CiviCRM user does not exist: the operator's mistake, not a crash
        ghost = await gw.post("/v4/Contact/get", json={}, headers={"Authorization": tokens["ghost"]})
        body = assert_problem(ghost, 502, "gateway-misconfigured")
        assert "ghost" in body["detail"]
        boss = await gw.post(
            "/v4/Contact/get", json={"select": ["id"]}, headers={"Authorization": tokens["boss"]}
        )
        assert boss.status_code == 200, boss.text
    assert site.count("Contact", [["first_name", "=", "Who"]]) == 1


async def assert_site_unusable(
    settings: Any, backend: str, slug: str, in_detail: str, pool_error: str
) -> None:
    """A fresh cv per call fails the call with a 502 problem; the pipe pool refuses to start."""
    if backend == "cv":
        async with gateway(settings) as gw:
            body = assert_problem(await gw.post("/v4/Contact/get", json={}), 502, slug)
            assert in_detail in body["detail"]
    else:
        with pytest.raises(RuntimeError, match=re.escape(pool_error)):
            async with gateway(settings):
                pass


async def test_unknown_user(site: Site, backend: str) -> None:
    await assert_site_unusable(
        cv_settings(site, backend, cv_user="nobody"),
        backend,
        "gateway-misconfigured",
        "nobody",
        "could not log in as 'nobody'",
    )


async def test_context_prefix_and_wrapper(site: Site, backend: str, tmp_path: Path) -> None:
    """Through ``env`` (as ``docker exec`` would run it) and through a wrapper script that
    does not exec (so cv runs as a child of the context process)."""
    marker = tmp_path / "wrapper-ran"
    wrapper = write_script(tmp_path / "fake-docker-exec", f'echo "$$" >> "{marker}"\n"$@"\n')
    for context in ("env CV_SANDBOX_NOISE=stderr", str(wrapper)):
        async with gateway(cv_settings(site, backend, cv_context=context)) as gw:
            response = await gw.post("/v4/Contact/get", json={"select": ["id"], "where": [["id", "=", 2]]})
            assert response.status_code == 200, response.text
            assert response.json() == [{"id": 2}]
            assert_problem(await gw.post("/v4/Foo/get", json={}), 404, "unknown-api")
    assert marker.read_text().strip()


async def test_site_found_from_cwd(site: Site, backend: str, tmp_path: Path) -> None:
    """Without cv_cwd the stand-in (like cv) searches from the working directory: outside a
    site that is a boot failure (502), or the pool refuses to start."""
    missing = "Failed to locate civicrm.settings.php"
    await assert_site_unusable(
        cv_settings(site, backend, cv_cwd=None), backend, "upstream-error", missing, missing
    )
    nested = site.dir / "web" / "sites"
    nested.mkdir(parents=True)
    async with gateway(cv_settings(site, backend, cv_cwd=str(nested))) as gw:
        assert (await gw.post("/v4/Contact/get", json={"select": ["id"]})).status_code == 200


async def test_php_notices_around_json(site: Site, backend: str) -> None:
    settings = cv_settings(site, backend, cv_context="env CV_SANDBOX_NOISE=both")
    async with gateway(settings) as gw:
        response = await gw.post("/v4/Contact/get", json={"select": ["id"], "where": [["id", "=", 2]]})
        assert response.status_code == 200, response.text
        assert response.json() == [{"id": 2}]
        count = await gw.post("/v3/Contact/getcount", json={})
        assert count.json() == 3
        body = assert_problem(await gw.post("/v4/Foo/get", json={}), 404, "unknown-api")
        assert body["detail"].startswith("API (Foo, get) does not exist (or the extension")


async def test_command_not_found(site: Site, backend: str, tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-cv")
    for context in (None, "env"):  # run directly, and through a context that cannot find it
        settings = cv_settings(site, backend, cv_command=missing, cv_context=context)
        if backend == "cv":
            async with gateway(settings) as gw:
                assert_problem(await gw.post("/v4/Contact/get", json={}), 503, "upstream-unavailable")
        else:
            with pytest.raises(RuntimeError, match="cv pipe backend failed to start"):
                async with gateway(settings):
                    pass


async def test_concurrent_calls_queue(site: Site, backend: str) -> None:
    """More callers than processes: they queue, never exceed the limit, and all succeed."""
    # Without metadata look-ups (validation off, a trusted client), so that the count is of these
    # calls only.
    settings = cv_settings(
        site,
        backend,
        cv_concurrency=2,
        pipe_size=2,
        cv_context="env CV_SANDBOX_CALL_DELAY=0.2",
        validate_calls=False,
    )
    async with gateway(trusted(settings), token=TRUSTED_TOKEN) as gw:
        backend_obj: Any = gw.backend  # type: ignore[attr-defined]
        peak = {"busy": 0.0, "queued": 0.0}
        calls = [asyncio.create_task(gw.post("/v4/Contact/get", json={"select": ["id"]})) for _ in range(6)]
        while not all(task.done() for task in calls):
            stats = backend_obj.stats()
            peak = {key: max(value, stats[key]) for key, value in peak.items()}
            await asyncio.sleep(0.01)
        assert [(await task).status_code for task in calls] == [200] * 6
        assert peak["busy"] == 2
        assert peak["queued"] >= 1
        assert backend_obj.stats()["calls"] == 6
        assert backend_obj.stats()["queued"] == 0
