"""A Python client generated from the served document (openapi-python-client) creates and reads
back a Contact, custom field included, through a real gateway process on the sandbox."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from tests.openapi.conftest import CLIENT_TOKEN, fetch_document

pytestmark = pytest.mark.slow
PACKAGE = "civicrm_gateway_client"


@pytest.fixture
def generated(served, tmp_path):
    document = tmp_path / "openapi.json"
    document.write_bytes(fetch_document(served))
    config = tmp_path / "config.yaml"
    config.write_text("post_hooks: []\n")  # no formatter run: the test needs none installed
    generator = Path(sys.executable).with_name("openapi-python-client")
    result = subprocess.run(
        [
            str(generator),
            "generate",
            "--path",
            str(document),
            "--meta",
            "none",
            "--output-path",
            str(tmp_path / PACKAGE),
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # every per-entity operation was generated (only other helpers' routes may be skipped)
    skipped = [line for line in result.stdout.splitlines() if "will not be generated" in line]
    assert not [line for line in skipped if "/v4/{" in line or "/v4/Contact" in line], skipped
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def test_generated_client_creates_and_reads_a_contact(generated, served):
    contact_create = importlib.import_module(f"{PACKAGE}.api.contact.contact_create")
    contact_get = importlib.import_module(f"{PACKAGE}.api.contact.contact_get")
    models = importlib.import_module(f"{PACKAGE}.models")

    client = generated.AuthenticatedClient(base_url=served.url, token=CLIENT_TOKEN)
    created = contact_create.sync(
        client=client,
        body=models.ContactCreateParams(
            contact_type="Individual",
            first_name="Grace",
            last_name="Hopper",
            constituent_information_most_important_issue="Edu",
        ),
    )
    assert isinstance(created, list) and isinstance(created[0], models.ContactRecord), created
    contact_id = created[0].id
    assert isinstance(contact_id, int)

    found = contact_get.sync(
        client=client,
        body=models.ContactGetParams(
            id=contact_id, select=["id", "display_name", "Constituent_Information.Most_Important_Issue"]
        ),
    )
    assert [(c.id, c.display_name, c.constituent_information_most_important_issue) for c in found] == [
        (contact_id, "Grace Hopper", "Edu")
    ]

    # the native form through the same client: where clauses instead of field filters
    native = contact_get.sync(
        client=client,
        body=models.ContactGetParams(select=["first_name"], where=[["last_name", "=", "Hopper"]]),
    )
    assert [c.first_name for c in native] == ["Grace"]

    # errors come back as the documented problem
    anonymous = generated.Client(base_url=served.url)
    problem = contact_get.sync(client=anonymous, body=models.ContactGetParams(limit=1))
    assert isinstance(problem, models.Problem)
    assert (problem.status, problem.type_) == (401, "/problems/unauthenticated")
