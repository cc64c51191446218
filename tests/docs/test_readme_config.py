"""The documented configuration examples work when copied verbatim (the clients file of
docs/clients.md, which the README links to)."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.clients_file import load_clients
from gateway.settings import Settings
from tests.conftest import ROOT


def _toml_block() -> str:
    text = (ROOT / "docs" / "clients.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```toml\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1
    return blocks[0]


def test_the_clients_file_example_loads_as_written(tmp_path: Path):
    clients_file = tmp_path / "clients.toml"
    clients_file.write_text(_toml_block())
    [client] = load_clients(Settings(backend="sandbox", clients_file=clients_file))
    assert client.name == "reporting"
    assert client.policy.read_only is True and client.policy.max_limit == 1000
    assert client.identity is not None and client.identity.cv_user == "reporting"
    assert client.identity.api_key is None
    assert len(client.token_hash) == 32
