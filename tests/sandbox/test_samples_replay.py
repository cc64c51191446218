"""Replays every request captured from a real CiviCRM 5.77 (tests/fixtures/samples) against the
sandbox's wire app and compares what comes back: status, content type, the envelope's keys in
order, each record's field names in order, and error texts word for word.

Ids, hashes, timestamps and the random "Error ID" differ by nature and are not compared; the
database state is rebuilt in the same order as the capture (Ada Lovelace is contact 3 and so on).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.sandbox.engine import Sandbox
from gateway.sandbox.wire import WireConfig, create_wire_app

SAMPLES = Path(__file__).parent.parent / "fixtures" / "samples"
BASE = "http://127.0.0.1:8080"


@dataclass
class Sample:
    title: str
    method: str = "POST"
    path: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    data: list[tuple[str, str]] = field(default_factory=list)
    status: int = 0
    content_type: str = ""
    body: str = ""


def _parse_curl(line: str, sample: Sample) -> None:
    # The capture printed curl's argv unquoted; header values and data hold spaces, so split on
    # the option flags rather than on whitespace.
    rest = line[len("$ curl ") :]
    parts = re.split(r"\s(?=-[XHGd]\s|--data-urlencode\s|-d\s|http://)|\s(?=-G$)", " " + rest)
    for part in (p.strip() for p in parts if p.strip()):
        if part == "-G":
            sample.method = "GET"
        elif part.startswith("-X "):
            sample.method = part[3:].strip()
        elif part.startswith("-G "):
            sample.method = "GET"
            part = part[3:].strip()
            sample.path = part[len(BASE) :]
        elif part.startswith("-H "):
            name, _, value = part[3:].partition(":")
            sample.headers[name.strip()] = value.strip()
        elif part.startswith("--data-urlencode "):
            name, _, value = part[len("--data-urlencode ") :].partition("=")
            sample.data.append((name, value))
        elif part.startswith("-d"):
            pass  # "-d " with nothing: an empty body
        elif part.startswith("http://"):
            sample.path = part[len(BASE) :]


def parse(path: Path) -> list[Sample]:
    samples: list[Sample] = []
    for block in re.split(r"^### ", path.read_text(), flags=re.M)[1:]:
        lines = block.splitlines()
        sample = Sample(lines[0].strip())
        short = re.match(r"(v[34]) (\w+)[/.](\w+) (params|json)=(.*)$", sample.title)
        if short:
            version, entity, action, _, params = short.groups()
            if version == "v4":
                sample.path = f"/civicrm/ajax/api4/{entity}/{action}"
                sample.data = [("params", params)]
            else:
                sample.path = "/civicrm/ajax/rest"
                sample.data = [("entity", entity), ("action", action), ("json", params)]
            sample.headers = {"X-Civi-Auth": "Bearer <API_KEY>", "X-Requested-With": "XMLHttpRequest"}
        i = 1
        while i < len(lines) and not lines[i].startswith("HTTP/"):
            if lines[i].startswith("$ curl "):
                _parse_curl(lines[i], sample)
            i += 1
        if i == len(lines):
            continue
        sample.status = int(lines[i].split()[1])
        i += 1
        while i < len(lines) and lines[i].strip():
            name, _, value = lines[i].partition(":")
            if name.lower() == "content-type":
                sample.content_type = value.strip()
            i += 1
        sample.body = "\n".join(x for x in lines[i:] if not x.startswith("(curl exit")).strip()
        samples.append(sample)
    return samples


def _masked(message: str) -> str:
    # The random Error ID, and counts of records the capture made off the record.
    message = re.sub(r"\(Error ID: [\w-]+\)", "(Error ID: *)", message)
    return re.sub(r"but found \d+", "but found N", message)


def _same_shape(real: Any, ours: Any, where: str) -> None:
    """Same keys in the same order, recursively through envelopes and records."""
    if isinstance(real, dict):
        assert isinstance(ours, dict), f"{where}: expected an object, got {ours!r}"
        assert list(ours) == list(real), f"{where}: keys differ"
        for key, value in real.items():
            if key == "error_message":
                assert _masked(ours[key]) == _masked(value), f"{where}: error text differs"
            elif key in ("values", "people", "bad") or isinstance(value, dict | list):
                _same_shape(value, ours[key], f"{where}.{key}")
            elif key in (
                "count",
                "countFetched",
                "countMatched",
                "is_error",
                "error_code",
                "status",
                "version",
                "entity",
                "action",
            ):
                assert type(ours[key]) is type(value), f"{where}.{key}: type differs"
    elif isinstance(real, list):
        assert isinstance(ours, list), f"{where}: expected a list"
        assert bool(ours) == bool(real), f"{where}: one side is empty"
        if real and isinstance(real[0], dict):
            _same_shape(real[0], ours[0], f"{where}[0]")


def setup_sandbox() -> tuple[Sandbox, dict[str, str]]:
    sandbox = Sandbox(":memory:", demo=0)
    keys = {"<API_KEY>": sandbox.admin_api_key, "<SITE_KEY>": sandbox.site_key}
    return sandbox, keys


def _keys_in_order(text: str) -> list[str]:
    return re.findall(r'"(\w+)":', text)


def _expand(text: str, keys: dict[str, str]) -> str:
    for placeholder, value in keys.items():
        text = text.replace(placeholder, value)
    return text


ALL = [(name, s) for name in ("apiv4-rest.txt", "apiv3-rest.txt") for s in parse(SAMPLES / name)]


def test_the_capture_parses() -> None:
    """Guards the parser itself: every sample block yields a request and an expected status."""
    assert len(ALL) >= 45
    assert all(s.path and s.status for _, s in ALL)
    assert any(s.method == "GET" for _, s in ALL)


@pytest.fixture(scope="module")
def replayed() -> dict[str, tuple[Sample, httpx.Response]]:
    """All samples sent in capture order to one sandbox, like the real session."""
    sandbox, keys = setup_sandbox()
    config = WireConfig.for_sandbox(sandbox)
    app = create_wire_app(sandbox, config)
    results: dict[str, tuple[Sample, httpx.Response]] = {}

    async def run() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            for name, sample in ALL:
                if sample.title.startswith("16."):
                    # The capture created two more contacts (5, 6) off the record before this.
                    for first, last in (("Grace", "Hopper"), ("Alan", "Turing")):
                        sandbox.api4(
                            "Contact",
                            "create",
                            {
                                "values": {
                                    "contact_type": "Individual",
                                    "first_name": first,
                                    "last_name": last,
                                }
                            },
                        )
                if sample.title.startswith("22.") and "<STAFF_API_KEY>" not in keys:
                    # ... and its staff user just before using it.
                    staff = sandbox.ensure_staff()
                    keys["<STAFF_API_KEY>"] = staff["api_key"]
                    config.api_keys[staff["api_key"]] = staff["contact_id"]
                headers = {k: _expand(v, keys) for k, v in sample.headers.items()}
                data = [(k, _expand(v, keys)) for k, v in sample.data]
                if sample.method == "GET":
                    response = await client.get(sample.path, params=data, headers=headers)
                else:
                    response = await client.post(
                        sample.path, data=dict(data) if data else None, headers=headers
                    )
                results[f"{name}: {sample.title}"] = (sample, response)

    import anyio

    anyio.run(run)
    sandbox.close()
    return results


@pytest.mark.parametrize("key", [f"{n}: {s.title}" for n, s in ALL])
def test_sandbox_answers_like_civicrm(replayed: dict[str, tuple[Sample, httpx.Response]], key: str) -> None:
    sample, response = replayed[key]
    assert response.status_code == sample.status, response.text[:500]
    assert response.headers["content-type"].split(";")[0].lower() == sample.content_type.split(";")[0].lower()
    if sample.content_type.startswith("application/json"):
        try:
            real = json.loads(sample.body)
        except json.JSONDecodeError:
            # The capture cut this body short: compare the keys of its first record, in order.
            shown = _keys_in_order(sample.body)[:28]
            assert _keys_in_order(response.text)[: len(shown)] == shown
            return
        ours = response.json()
        _same_shape(real, ours, "body")
        if isinstance(real, dict) and isinstance(real.get("values"), list):
            assert len(ours["values"]) == len(real["values"])
            if real["values"] and "id" in real["values"][0] and "hash" not in real["values"][0]:
                # Reads of existing data: same records, in the same order.
                assert [r.get("id") for r in ours["values"]] == [r.get("id") for r in real["values"]]
    else:
        assert response.text.strip() == sample.body


def test_capture_order_is_needed_for_ids() -> None:
    """The parser kept the capture's order (ids in later samples depend on it)."""
    titles = [s.title for _, s in ALL]
    assert titles.index(next(t for t in titles if t.startswith("1."))) < titles.index(
        next(t for t in titles if t.startswith("18."))
    )


def test_curl_parsing_of_headers_and_data() -> None:
    sample = Sample("x")
    _parse_curl(
        "$ curl -X POST -H X-Civi-Auth: Bearer <API_KEY> -H X-Requested-With: "
        "XMLHttpRequest http://127.0.0.1:8080/civicrm/ajax/api4/Contact/get "
        '--data-urlencode params={"limit":1} --data-urlencode index="id"',
        sample,
    )
    assert sample.method == "POST" and sample.path == "/civicrm/ajax/api4/Contact/get"
    assert sample.headers == {"X-Civi-Auth": "Bearer <API_KEY>", "X-Requested-With": "XMLHttpRequest"}
    assert sample.data == [("params", '{"limit":1}'), ("index", '"id"')]
