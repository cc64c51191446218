"""Reading the API consumers from the configuration: ``CIVI_GATEWAY_CLIENT_TOKENS`` (lines of
``name:sha256:<hex>``, full-access clients) and ``CIVI_GATEWAY_CLIENTS_FILE`` (a TOML file with
a ``[clients.NAME]`` table per client, ``token_sha256`` plus policy keys, and optional
``[defaults]``). Beside the settings, as configuration reading; the call flow gets the clients.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.core.identity import Identity
from gateway.core.policy import Policy
from gateway.flow.clients import Client
from gateway.settings import Settings, SettingsError, env_name

_HASH_LINE = re.compile(r"(?P<name>[A-Za-z0-9_.@-]{1,64}):sha256:(?P<hex>[0-9a-fA-F]{64})")


def _parse_token_lines(text: str) -> list[tuple[str, str]]:
    entries = []
    for raw in re.split(r"[\n,]", text):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _HASH_LINE.fullmatch(line)
        if not match:
            # Don't echo the line: someone may have pasted a plaintext token by mistake.
            raise SettingsError(
                f"{env_name('client_tokens')}: each entry must be NAME:sha256:<64 hex digits> "
                "(create one with `civicrm-gateway token create NAME`)"
            )
        entries.append((match["name"], match["hex"].lower()))
    return entries


def _read_secret_file(path: str, setting: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise SettingsError(f"{setting}: cannot read {path}: {exc.strerror}") from None


def _client_from_table(
    name: str, table: Mapping[str, Any], defaults: Mapping[str, Any], where: str
) -> Client:
    merged = {**defaults, **table}
    token_hash = str(merged.pop("token_sha256", "")).lower()
    if not re.fullmatch(r"[0-9a-f]{64}", token_hash):
        raise SettingsError(f"{where}: clients.{name}.token_sha256 must be 64 hex digits")
    api_key = merged.pop("civicrm_api_key_file", None)
    cv_user = merged.pop("cv_user", None)
    identity = None
    if api_key or cv_user:
        identity = Identity(
            api_key=_read_secret_file(api_key, f"{where}: clients.{name}.civicrm_api_key_file")
            if api_key
            else None,
            cv_user=str(cv_user) if cv_user else None,
        )
    try:
        policy = Policy.from_mapping(merged)
    except ValueError as exc:
        raise SettingsError(f"{where}: clients.{name}: {exc}") from None
    return Client(name, policy, identity, bytes.fromhex(token_hash))


def load_clients(settings: Settings) -> list[Client]:
    """Every configured client; an empty list means the gateway runs without client auth."""
    clients: list[Client] = []
    defaults: dict[str, Any] = {}
    if settings.clients_file is not None:
        where = env_name("clients_file")
        try:
            data = tomllib.loads(settings.clients_file.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"{where}: cannot read {settings.clients_file}: {exc}") from None
        defaults = dict(data.get("defaults", {}))
        for name, table in data.get("clients", {}).items():
            if not isinstance(table, dict):
                raise SettingsError(f"{where}: clients.{name} must be a table")
            clients.append(_client_from_table(name, table, defaults, where))
    if settings.client_tokens is not None:
        default_policy = Policy.from_mapping(defaults) if defaults else Policy()
        for name, hex_hash in _parse_token_lines(settings.client_tokens.get_secret_value()):
            clients.append(Client(name, default_policy, None, bytes.fromhex(hex_hash)))
    names = [c.name for c in clients]
    if len(set(names)) != len(names):
        raise SettingsError(
            f"client names must be unique across {env_name('client_tokens')} and {env_name('clients_file')}"
        )
    return clients
