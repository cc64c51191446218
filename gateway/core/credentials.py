"""Which CiviCRM fields and actions hold credentials: one list for the policy, result stripping
and the OpenAPI document.

A credential is anything that lets its holder act as someone: a contact's ``api_key`` (an AuthX
login), ``hash`` (forges checksums), passwords and secrets of payment processors, mail accounts
and OAuth clients, tokens, session ids. Matched by name in any case style (``api_key``,
``recaptchaPrivateKey``, ``mapAPIKey``), so a field CiviCRM adds later under such a name is
covered without a release; a false positive only means a client needs ``credential_fields``.
Metadata adds what names miss: a field whose input is a password (``gateway.core.fields``).

Some entities are secrets as a whole (live sessions, user accounts and roles, payment
processors, mail accounts, OAuth tokens, scheduled jobs that run API calls as their author):
:data:`SECRET_ENTITIES` are left out of every glob, ``allow = ["*"]`` included; only a pattern
that names one lets a client reach it.
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
        "session_id",
        "sessionid",
        "hashed_password",
        "credential",
        # settings whose value holds a secret inside it (the SMTP password)
        "mailing_backend",
        "address_standardization_userid",
    }
)
_PATTERN = re.compile(r"(^|_)(password|passwd|secret|token|credentials?|session_id)(_|$)|_key$|^key$")
# camelCase and PascalCase words (``recaptchaPrivateKey``, ``mapAPIKey``) to snake_case.
_WORD_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
# ``key`` alone is a public identifier on some entities (Extension.key, Managed.name...).
_NOT_CREDENTIALS = frozenset(
    {"key", "cache_key", "option_key", "entity_key", "name_key", "search_key", "sort_key"}
)

# Actions that hand out credentials although they only "get".
CREDENTIAL_ACTIONS = frozenset({"getchecksum"})


# Entities whose records are secrets, sessions, users or run code as someone (CiviCRM 5.77's
# schema; the OAuth ones come with the oauth-client extension). Compared in lower case.
SECRET_ENTITIES = frozenset(
    name.lower()
    for name in (
        "Session",
        "User",
        "UFMatch",
        "Role",
        "UserRole",
        "RolePermission",
        "AuthxCredential",
        "PaymentProcessor",
        "PaymentToken",
        "MailSettings",
        "SmsProvider",
        "OAuthClient",
        "OAuthProvider",
        "OAuthSysToken",
        "OAuthContactToken",
        "OAuthSessionToken",
        "Job",
        "JobLog",
        "Queue",
        "QueueItem",
        "UserJob",
        "System",
        "Extension",
        "Managed",
        "ACL",
        "ACLEntityRole",
        "Log",
    )
)


def is_secret_entity(entity: str) -> bool:
    return entity.lower() in SECRET_ENTITIES


@functools.lru_cache(maxsize=8192)
def is_credential_field(name: str) -> bool:
    """Whether a bare field name (no join prefix, no ``:suffix``) names a credential."""
    low = _WORD_BOUNDARY.sub("_", name).lower()
    if low in CREDENTIAL_NAMES or name.lower() in CREDENTIAL_NAMES:
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
