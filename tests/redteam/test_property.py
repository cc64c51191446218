"""Property: whatever a client sends, the gateway either refuses it (4xx) or lets through a call
that touches only fields its policy allows.

The sandbox records every (entity, field) its query compiler and write paths touch
(``gateway.sandbox.touch``). Hypothesis generates random and hostile params (PHP-array shapes,
SQL expressions, joins, chains with ``$`` references, odd letter case, credentials under every
disguise) for several client policies; each is sent through the gateway over HTTP (ASGI), and
what the sandbox touched is compared with the policy. A failure prints the falsifying example
and the seed (``--hypothesis-seed`` reproduces a run).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.core.policy import Policy
from gateway.flow.clients import hash_token
from gateway.sandbox.touch import recording
from gateway.settings import Settings
from gateway.web.app import create_app

EXAMPLES = int(os.environ.get("GATEWAY_PROPERTY_EXAMPLES", "1000"))

# What each policy's client tries: mostly what it may call (so calls reach CiviCRM), some not.
TARGETS = {
    "narrow": ["Contact.get"] * 6 + ["Contact.GET", "contact.get", "Email.get", "Contact.create"],
    "reader": ["Contact.get", "Email.get"] * 3
    + ["Contact.Get", "Contact.update", "Note.get", "Email.create", "v3:Contact.get"],
    "writer": [
        "Contact.get",
        "Contact.create",
        "Contact.update",
        "Contact.save",
        "Note.create",
        "v3:Contact.get",
    ]
    * 2
    + ["Contact.delete", "Contact.DELETE", "Email.create"],
}
POLICIES = {
    "narrow": {"allow": ["v4:Contact.get"], "fields": {"Contact": ["id", "display_name", "first_name"]}},
    "reader": {"allow": ["v4:Contact.get", "v4:Email.get"], "read_only": True, "max_limit": 5},
    "writer": {"allow": ["v4:Contact.*", "v4:Note.create", "v3:Contact.get"], "deny": ["v4:Contact.delete"]},
}

FIELDS = [
    "id",
    "display_name",
    "first_name",
    "last_name",
    "api_key",
    "hash",
    "contact_type",
    "job_title",
    "email_primary.email",
    "email_primary.contact_id.api_key",
    "contact_id.hash",
    "e.email",
    "c.api_key",
    "employer_id.display_name",
    "*",
    "email_primary.*",
    "custom.*",
    "contact_type:label",
    "API_KEY",
    "row_count",
]
FUNCTIONS = [
    "UPPER",
    "LOWER",
    "CONCAT",
    "COALESCE",
    "COUNT",
    "GROUP_CONCAT",
    "SUBSTRING",
    "LENGTH",
    "upper",
    "IF",
]

LITERALS = ["a", "x\\", "", "it''s"]
field = st.sampled_from(FIELDS)
WRITABLE = [
    "first_name",
    "last_name",
    "job_title",
    "api_key",
    "hash",
    "contact_type",
    "API_KEY",
    "note",
    "entity_id",
    "email",
    "contact_id",
]


@st.composite
def expression(draw: Any) -> str:
    """Mostly what CiviCRM accepts (so that calls reach the sandbox), sometimes hostile."""
    kind = draw(st.integers(0, 19))
    alias = draw(
        st.sampled_from(
            ["", " AS x", " AS x", " AS display_name", " AS api_key", " as y"]
            if kind >= 18
            else ["", " AS x", " AS z"]
        )
    )
    fn = draw(st.sampled_from(FUNCTIONS if kind >= 18 else FUNCTIONS[:7]))
    args = ", ".join(draw(st.lists(field, min_size=1, max_size=2)))
    if kind < 10:
        return draw(field)
    if kind < 15:
        return f"{fn}({args}){alias}"
    if kind < 17:
        return f"{draw(field)} + {draw(field)}{alias}"
    if kind < 19:
        literal = draw(st.sampled_from(LITERALS))
        return f"{fn}('{literal}', {args}){alias}"
    return draw(st.text(max_size=20))


def as_php(value: list[Any], draw: Any) -> Any:
    """A list, or the same list as a JSON object (PHP reads both as an array)."""
    if draw(st.booleans()):
        return {
            str(k): v
            for k, v in zip(
                draw(
                    st.permutations(
                        ["a", "0", "b", "1", "z", "9"][: len(value)]
                        if len(value) <= 6
                        else [str(i) for i in range(len(value))]
                    )
                ),
                value,
                strict=False,
            )
        }
    return value


@st.composite
def clause(draw: Any, depth: int = 0) -> Any:
    if depth < 2 and draw(st.integers(0, 4)) == 0:
        glue = draw(st.sampled_from(["OR", "AND", "NOT", "or"]))
        return [glue, as_php(draw(st.lists(clause(depth + 1), min_size=1, max_size=3)), draw)]
    op = draw(st.sampled_from(["=", "LIKE", "IS NOT NULL", "IN", ">", "<>", "=", "LIKE", "like", "BOGUS"]))
    left = draw(expression())
    if op == "IS NOT NULL":
        return [left, op]
    value = draw(
        st.one_of(st.integers(0, 5), st.sampled_from(["$api_key", "$hash", "api_key", "a%", "x", "$id"]))
    )
    if op in ("IN",):
        value = draw(st.lists(st.integers(0, 5), max_size=3))
    if draw(st.integers(0, 5)) == 0:
        return [left, op, draw(field), True]
    return [left, op, value]


@st.composite
def v4_params(draw: Any, action: str = "get", depth: int = 0) -> dict[str, Any]:
    """Params of the shape ``action`` takes, filled with hostile content."""
    params: dict[str, Any] = {}
    low = action.lower()
    if low == "get":
        if draw(st.integers(0, 3)):
            params["select"] = as_php(draw(st.lists(expression(), max_size=4)), draw)
        if draw(st.booleans()):
            params["where"] = as_php(draw(st.lists(clause(), max_size=3)), draw)
        if draw(st.integers(0, 3)) == 0:
            params["orderBy"] = {draw(expression()): draw(st.sampled_from(["ASC", "DESC"]))}
        if draw(st.integers(0, 4)) == 0:
            params["groupBy"] = [draw(expression())]
            params["having"] = [draw(clause())]
        if draw(st.integers(0, 3)) == 0:
            target = draw(st.sampled_from(["Email AS e", "Contact AS c", "Note AS n"]))
            params["join"] = [[target, draw(st.sampled_from(["LEFT", "INNER"])), draw(clause())]]
        if draw(st.integers(0, 2)) == 0:
            params["limit"] = draw(st.integers(-1, 8))
    elif low in ("create", "update"):
        params["values"] = {
            draw(st.sampled_from(WRITABLE)): draw(
                st.sampled_from(["x", "$hash", "$api_key", "Individual", "$id"])
            )
            for _ in range(draw(st.integers(1, 3)))
        }
        if low == "update":
            params["where"] = [["id", "=", draw(st.integers(1, 5))]]
    elif low == "save":
        params["records"] = as_php(
            [{"id": draw(st.integers(1, 5)), draw(st.sampled_from(WRITABLE)): "x"}], draw
        )
    else:  # delete
        params["where"] = [draw(clause())]
    if depth < 2 and draw(st.integers(0, 3)) == 0:
        entity = draw(st.sampled_from(["Contact", "Email", "Note"]))
        sub = draw(st.sampled_from(["get", "create", "GET", "update"]))
        params["chain"] = {"c": [entity, sub, draw(v4_params(sub, depth + 1))]}
    if draw(st.integers(0, 15)) == 0:
        params[draw(st.sampled_from(["checkPermissions", "frobnicate"]))] = False
    return params


@st.composite
def request(draw: Any, targets: list[str]) -> tuple[str, dict[str, Any]]:
    target = draw(st.sampled_from(targets))
    if target.startswith("v3:"):
        key = draw(
            st.sampled_from(
                ["api.Email.get", "api_Email_create", "api.email.get", "return", "api_key", "options", "hash"]
            )
        )
        value = draw(
            st.sampled_from(
                [
                    {},
                    {"return": "email"},
                    "api_key,hash",
                    {"limit": 2},
                    {"sort": "hash DESC"},
                    "id",
                    1,
                    {"email": "$value.hash"},
                ]
            )
        )
        return "/v3/Contact/get", {key: value}
    entity, action = target.split(".")
    return f"/v4/{entity}/{action}", draw(v4_params(action))


CREDENTIALS = {"api_key", "hash"}  # the ones the sandbox's entities hold


def allowed(policy: Policy, entity: str, name: str) -> bool:
    """Judged from the policy's configuration, not by the gateway's own code."""
    reachable = any(
        policy.permits(f"v4:{entity}.{a}") and (not policy.read_only or a == "get")
        for a in ("get", "create", "update", "save")
    )
    listed = policy.fields.get(entity)
    return reachable and name not in CREDENTIALS and (listed is None or name in listed)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(POLICIES))
def test_only_allowed_fields_are_touched(name: str, tmp_path) -> None:
    token = f"cgw_property-{name}-0123456789abcdef"
    clients = tmp_path / "clients.toml"
    table = POLICIES[name]
    lines = [f"[clients.{name}]", f'token_sha256 = "{hash_token(token)}"']
    for key, value in table.items():
        if key == "fields":
            inner = ", ".join(f"{e} = {v!r}".replace("'", '"') for e, v in value.items())
            lines.append(f"fields = {{{inner}}}")
        else:
            lines.append(f"{key} = {value!r}".replace("'", '"').replace("True", "true"))
    clients.write_text("\n".join(lines) + "\n")
    policy = Policy.from_mapping(table)
    app = create_app(
        Settings(
            backend="sandbox",
            sandbox_demo=5,
            sandbox_db=":memory:",
            clients_file=clients,
            default_rate_limit=None,
        )
    )
    loop = asyncio.new_event_loop()
    headers = {"Authorization": f"Bearer {token}"}
    lifespan = app.router.lifespan_context(app)
    loop.run_until_complete(lifespan.__aenter__())
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost")
    try:
        for entity in ("Contact", "Email", "Note"):  # metadata warm: only the calls record
            loop.run_until_complete(client.post(f"/v4/{entity}/get", json={"limit": 1}, headers=headers))

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            print_blob=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(request(TARGETS[name]))
        def check(sent: tuple[str, dict[str, Any]]) -> None:
            path, body = sent
            with recording() as touched:
                response = loop.run_until_complete(client.post(path, json=body, headers=headers))
            assert response.status_code < 500, (path, body, response.text)
            outside = sorted(t for t in touched if not allowed(policy, *t))
            assert not outside, (path, body, response.status_code, outside)

        check()
    finally:
        loop.run_until_complete(client.aclose())
        loop.run_until_complete(lifespan.__aexit__(None, None, None))
        loop.close()
