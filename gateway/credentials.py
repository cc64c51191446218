"""Which CiviCRM fields and actions hold credentials: one list for the policy, result stripping
and the OpenAPI document.

A credential is anything that lets its holder act as someone: a contact's ``api_key`` (an AuthX
login), ``hash`` (forges checksums), passwords and secrets of payment processors, mail accounts
and OAuth clients, tokens. Matched by name, so a field CiviCRM adds later under such a name is
covered without a release; a false positive only means a client needs ``credential_fields``.
"""

from __future__ import annotations

import functools
import re

# Exact names, and name parts, that mark a credential (compared in lower case).
CREDENTIAL_NAMES = frozenset(
    {
        "api_key",
        "hash",
        "password",
        "passwd",
        "signature",
        "secret",
        "checksum",
        "site_key",
        "private_key",
        "access_token",
        "refresh_token",
        "token",
        "client_secret",
    }
)
_PATTERN = re.compile(r"(^|_)(password|passwd|secret|token)(_|$)|_key$|^key$")
# ``key`` alone is a public identifier on some entities (Extension.key, Managed.name...).
_NOT_CREDENTIALS = frozenset(
    {"key", "cache_key", "option_key", "entity_key", "name_key", "search_key", "sort_key"}
)

# Actions that hand out credentials although they only "get".
CREDENTIAL_ACTIONS = frozenset({"getchecksum"})


def is_credential_field(name: str) -> bool:
    """Whether a bare field name (no join prefix, no ``:suffix``) names a credential."""
    low = name.lower()
    if low in CREDENTIAL_NAMES:
        return True
    if low in _NOT_CREDENTIALS:
        return False
    return bool(_PATTERN.search(low))


@functools.lru_cache(maxsize=4096)  # asked for every key of every record answered
def is_credential_key(key: str) -> bool:
    """Whether a result key shows a credential: ``api_key``, ``contact_id.api_key``,
    ``UPPER:api_key`` (CiviCRM's key for a function without alias), ``hash:label``."""
    last = key.rpartition(".")[2].rpartition(":")
    # "FN:field" keys name the field after the colon; "field:suffix" keys before it.
    return any(part and is_credential_field(part) for part in (last[0], last[2]))


def is_credential_action(action: str) -> bool:
    return action.lower() in CREDENTIAL_ACTIONS
