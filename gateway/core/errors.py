"""Error mapping: every failure the gateway reports, and how CiviCRM's failures map onto them.

CiviCRM answers HTTP 500 for almost every APIv4 error and HTTP 200 with ``is_error`` for APIv3,
so the class of a failure must be read from its message. This module is the only place that does
it; every backend (HTTP, sandbox, cv, cv pipe) hands its raw failure to :func:`from_civicrm`.

Bodies are RFC 9457 ``application/problem+json``: ``type``, ``title``, ``status``, ``detail``,
plus ``civicrm`` (CiviCRM's own ``error_code`` / ``error_message``, never debug or backtrace).

| type                        | status | when                                                          |
|-----------------------------|--------|---------------------------------------------------------------|
| invalid-request             | 400    | the gateway refused the request (body, names, query)          |
| unauthenticated             | 401    | missing or wrong client token                                 |
| gateway-policy-denied       | 403    | the gateway's policy for this client forbids the call         |
| rate-limited                | 429    | over the client's rate or concurrency limit (Retry-After)     |
| payload-too-large           | 413    | request body over the configured limit                        |
| route-not-found             | 404    | no such gateway route                                         |
| method-not-allowed          | 405    | GET of a write action, or a write CiviCRM refused over GET    |
| unknown-api                 | 404    | CiviCRM has no such entity or action                          |
| record-not-found            | 404    | APIv3 getsingle/getvalue matched nothing                      |
| unknown-field               | 400    | a field the call names does not exist (closest names suggested)|
| unsupported-media-type      | 415    | a body that is not application/json                           |
| cross-origin-denied         | 403    | a browser page of another origin, or a Host not served        |
| civicrm-permission-denied   | 403    | CiviCRM refused the call for lack of permission               |
| civicrm-bad-request         | 400    | CiviCRM refused the parameters (field, operator, type, where) |
| civicrm-validation          | 422    | CiviCRM refused the values (mandatory, invalid option, FK)    |
| civicrm-conflict            | 409    | duplicate record, or getsingle matched several                |
| civicrm-error               | 400    | any other error CiviCRM raised for this call                  |
| gateway-misconfigured       | 502    | CiviCRM rejected the gateway's own credentials or headers     |
| upstream-error              | 502    | CiviCRM failed (database error, masked error, crash)          |
| upstream-invalid-response   | 502    | CiviCRM answered something that is not its API's JSON         |
| upstream-unexpected-answer  | 502    | CiviCRM's answer held keys the call did not ask for, or a secret |
| upstream-unavailable        | 503    | CiviCRM cannot be reached                                     |
| upstream-maintenance        | 503    | CiviCRM is in maintenance mode                                |
| upstream-timeout            | 504    | CiviCRM did not answer in time                                |
| gateway-not-ready           | 503    | this gateway process is starting or shutting down (/readyz)   |
| internal-error              | 500    | a bug in the gateway (logged); never caused by input          |
| idempotency-key-reused      | 422    | an Idempotency-Key sent again with another call               |
| idempotency-key-in-flight   | 409    | the first request with this Idempotency-Key still runs        |
| idempotency-key-required    | 428    | this client must send an Idempotency-Key with every write     |
| write-outcome-unknown       | 504    | a keyed write was sent but its answer lost: it may have run   |
| idempotency-store-unavailable | 503  | the Idempotency-Key store cannot be reached: nothing was sent |

Each type also says what a failure of it tells about CiviCRM's health (``ProblemType.upstream``),
and the circuit breaker reads nothing else: only ``UNHEALTHY`` types count towards opening it;
an ``UNCLEAR`` one (a PHP crash answers one bad call and an outage alike) counts only when a
probe confirms it; every other type is an answer to one call, so one client's malformed calls
can never make the gateway refuse every client.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal, cast, get_args

# Every problem type's name: a typo in one is a mypy error, not a KeyError at run time.
Slug = Literal[
    "invalid-request",
    "unauthenticated",
    "gateway-policy-denied",
    "rate-limited",
    "payload-too-large",
    "route-not-found",
    "method-not-allowed",
    "unknown-api",
    "record-not-found",
    "unknown-field",
    "unsupported-media-type",
    "cross-origin-denied",
    "civicrm-permission-denied",
    "civicrm-bad-request",
    "civicrm-validation",
    "civicrm-conflict",
    "civicrm-error",
    "gateway-misconfigured",
    "upstream-error",
    "upstream-invalid-response",
    "upstream-unexpected-answer",
    "upstream-unavailable",
    "upstream-maintenance",
    "upstream-timeout",
    "gateway-not-ready",
    "internal-error",
    "idempotency-key-reused",
    "idempotency-key-in-flight",
    "idempotency-key-required",
    "idempotency-store-unavailable",
    "write-outcome-unknown",
]

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_BASE = "/problems/"

# What a failure says about CiviCRM's health (ProblemType.upstream; None: nothing, it is the
# answer to one call, or the gateway's own refusal).
UNHEALTHY = "unhealthy"  # CiviCRM cannot serve anyone now: unreachable, timed out, maintenance
UNCLEAR = "unclear"  # not CiviCRM's API answering: a crash, for everyone or for this input only


# Whether CiviCRM ran the call, as far as a failure of a type tells: "never" (the gateway
# refused it, or nothing reached CiviCRM: an Idempotency-Key is released), "maybe" (sent, no
# answer: a keyed write is not run again), "yes" (CiviCRM answered: its refusal is the answer).
Ran = Literal["never", "maybe", "yes"]


@dataclass(frozen=True, slots=True)
class ProblemType:
    """A problem type and what a failure of it means for the flow around the call: whether
    CiviCRM ran it (``ran``: idempotency), whether CiviCRM is down (``upstream``: the circuit
    breaker), whether a read may simply be sent again (``retry_read``: retries)."""

    slug: Slug
    status: int
    title: str
    description: str
    upstream: str | None = None
    ran: Ran = "yes"
    retry_read: bool = False

    @property
    def uri(self) -> str:
        return PROBLEM_BASE + self.slug

    @property
    def upstream_unhealthy(self) -> bool:
        """A failure of this type says CiviCRM is down for every caller."""
        return self.upstream == UNHEALTHY

    @property
    def upstream_unclear(self) -> bool:
        """A failure of this type may be CiviCRM down, or CiviCRM crashing on this call's
        input alone: only a probe can tell."""
        return self.upstream == UNCLEAR


_TYPES = [
    ProblemType(
        "invalid-request",
        400,
        "Invalid request",
        "The gateway refused the request before contacting CiviCRM: the body is not a "
        "JSON object, a name is not a valid entity or action, or a query field is "
        "malformed. Fix the request.",
        ran="never",
    ),
    ProblemType(
        "unauthenticated",
        401,
        "Authentication required",
        "Send a valid client token as 'Authorization: Bearer <token>'.",
        ran="never",
    ),
    ProblemType(
        "gateway-policy-denied",
        403,
        "Denied by the gateway's policy",
        "The gateway's policy for this client forbids this call (or a call it would "
        "chain or join to). Distinct from CiviCRM's own permission errors.",
        ran="never",
    ),
    ProblemType(
        "rate-limited",
        429,
        "Too many requests",
        "This client sent more requests than its rate limit, or has too many calls in "
        "flight. Retry after the number of seconds in Retry-After.",
        ran="never",
    ),
    ProblemType(
        "payload-too-large",
        413,
        "Request body too large",
        "The request body is larger than the gateway accepts.",
        ran="never",
    ),
    ProblemType(
        "route-not-found",
        404,
        "No such route",
        "The gateway has no route at this path. Calls go to /v4/{entity}/{action} or /v3/{entity}/{action}.",
        ran="never",
    ),
    ProblemType(
        "method-not-allowed",
        405,
        "Method not allowed",
        "Only read actions (get*, autocomplete) may use GET; send writes with POST.",
        ran="never",
    ),
    ProblemType(
        "unknown-api",
        404,
        "Unknown entity or action",
        "CiviCRM has no such entity or action (or the extension that provides it is not enabled).",
    ),
    ProblemType(
        "record-not-found", 404, "No matching record", "The call expected exactly one record and found none."
    ),
    ProblemType(
        "unknown-field",
        400,
        "Unknown field",
        "A field the call selects, filters, orders, joins on or writes does not exist on "
        "its entity (per CiviCRM's getFields). The detail names the closest fields. "
        "CiviCRM itself would drop an unknown select field or create value silently.",
    ),
    ProblemType(
        "unsupported-media-type",
        415,
        "Body must be JSON",
        "Send the params as a JSON object with 'Content-Type: application/json'. Form "
        "and plain-text bodies are refused: a web page could send them cross-site.",
        ran="never",
    ),
    ProblemType(
        "cross-origin-denied",
        403,
        "Cross-origin request refused",
        "The request came from a web page of an origin the gateway does not allow (its "
        "Origin header), or named a Host the gateway does not serve (DNS rebinding). "
        "Allowed origins: CIVI_GATEWAY_CORS_ORIGINS; hosts: CIVI_GATEWAY_ALLOWED_HOSTS.",
        ran="never",
    ),
    ProblemType(
        "civicrm-permission-denied",
        403,
        "Permission denied by CiviCRM",
        "The CiviCRM user the gateway acts as lacks a permission this call needs.",
    ),
    ProblemType(
        "civicrm-bad-request",
        400,
        "CiviCRM refused the parameters",
        "CiviCRM refused the call's parameters: an unknown field, an illegal operator, "
        "a value of the wrong type or a missing where clause.",
    ),
    ProblemType(
        "civicrm-validation",
        422,
        "CiviCRM refused the values",
        "CiviCRM refused the values to save: a mandatory value is missing, a value is "
        "not a valid option, or a reference points to a record that does not exist.",
    ),
    ProblemType(
        "civicrm-conflict",
        409,
        "Conflict",
        "The call conflicts with existing data: a duplicate record, or several records "
        "where one was expected.",
    ),
    ProblemType(
        "civicrm-error",
        400,
        "CiviCRM rejected the call",
        "CiviCRM raised an error for this call; its message is in detail.",
    ),
    ProblemType(
        "gateway-misconfigured",
        502,
        "Gateway misconfigured",
        "CiviCRM rejected the gateway's own credentials or request headers. The client "
        "cannot fix this: the gateway's operator must check its CiviCRM settings.",
        ran="never",
    ),
    ProblemType(
        "upstream-error",
        502,
        "CiviCRM failed",
        "CiviCRM failed while handling the call (for example a database error), or hid "
        "the error's text from the gateway's user.",
    ),
    ProblemType(
        "upstream-invalid-response",
        502,
        "Invalid response from CiviCRM",
        "CiviCRM answered with something that is not its API's JSON.",
        UNCLEAR,
        ran="maybe",
    ),
    ProblemType(
        "upstream-unexpected-answer",
        502,
        "Unexpected answer from CiviCRM",
        "CiviCRM's answer held something the call did not ask for: a key that is not a "
        "selected field, alias, chain or id, a chained result of the wrong shape, or one of "
        "the gateway's own credentials. The gateway did not pass it on (and logged the key "
        "names, never the values). Select what is needed explicitly; report it if it persists.",
    ),
    ProblemType(
        "upstream-unavailable",
        503,
        "CiviCRM unavailable",
        "The gateway cannot reach CiviCRM right now.",
        UNHEALTHY,
        ran="never",
        retry_read=True,
    ),
    ProblemType(
        "upstream-maintenance",
        503,
        "CiviCRM in maintenance mode",
        "CiviCRM is temporarily unavailable for maintenance.",
        UNHEALTHY,
        ran="never",
    ),
    ProblemType(
        "upstream-timeout",
        504,
        "CiviCRM timed out",
        "CiviCRM did not answer within the gateway's time limit.",
        UNHEALTHY,
        ran="maybe",
    ),
    ProblemType(
        "gateway-not-ready",
        503,
        "Gateway not ready",
        "This gateway process is still starting or is shutting down (draining): it "
        "finishes the calls in flight but should get no new ones. Another replica, or "
        "this one after Retry-After, can serve.",
        ran="never",
    ),
    ProblemType(
        "internal-error",
        500,
        "Gateway internal error",
        "An unexpected failure inside the gateway (a bug): it is logged with the "
        "request id. Never caused by a client's input.",
        ran="maybe",
    ),
    # --- Idempotency-Key (gateway/idempotency) ---
    ProblemType(
        "idempotency-key-reused",
        422,
        "Idempotency-Key reused for another call",
        "This client already sent this Idempotency-Key with a different call (entity, "
        "action or params). A key names one write: use a new key for a new write.",
        ran="never",
    ),
    ProblemType(
        "idempotency-key-in-flight",
        409,
        "Idempotency-Key still in flight",
        "The first request with this Idempotency-Key is still running. Retry after "
        "Retry-After seconds: the repeat then gets the first request's answer.",
        ran="never",
    ),
    ProblemType(
        "idempotency-key-required",
        428,
        "Idempotency-Key required",
        "This client's policy (require_idempotency_key) makes every write carry an "
        "Idempotency-Key header: 1-255 printable ASCII characters, new for each write.",
        ran="never",
    ),
    ProblemType(
        "idempotency-store-unavailable",
        503,
        "Idempotency-Key store unavailable",
        "The store that keeps Idempotency-Keys (SQLite in the state directory, or Redis) "
        "could not be reached, so the gateway could not promise that this write runs "
        "once. The write was not sent to CiviCRM: retry after Retry-After with the same "
        "key.",
        ran="never",
    ),
    ProblemType(
        "write-outcome-unknown",
        504,
        "Write sent, outcome unknown",
        "A write carrying an Idempotency-Key reached (or may have reached) CiviCRM, but "
        "its answer was lost (time-out, connection cut). It may or may not have "
        "happened, so this key will not run it again and answers this each time. Check "
        "by reading the record back (by a field the client set) or in the audit trail; "
        "if it is missing, send the write again with a new key.",
        ran="maybe",
    ),
]
PROBLEM_TYPES: dict[str, ProblemType] = {t.slug: t for t in _TYPES}
assert set(PROBLEM_TYPES) == set(get_args(Slug)), "every Slug has one ProblemType"


# Every setting is read from the environment variable of its name with this prefix.
ENV_PREFIX = "CIVI_GATEWAY_"


def env_name(field: str) -> str:
    """The environment variable of a setting, as an error message names it."""
    return f"{ENV_PREFIX}{field.upper()}"


class SettingsError(Exception):
    """Configuration that cannot work; the message names the variable(s) to fix. (Here, at
    the bottom, so that what checks a setting's value needs no import of the settings.)"""


class GatewayError(Exception):
    """A failure with a problem type; rendered as problem+json by the app."""

    def __init__(
        self,
        slug: Slug,
        detail: str,
        *,
        civicrm: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        status: int | None = None,
        upstream: str | None = None,
    ) -> None:
        self.problem = PROBLEM_TYPES[slug]
        self.detail = detail
        self.civicrm = civicrm
        self.headers = headers or {}
        self.status = status or self.problem.status
        # What this failure says about CiviCRM's health, when it is not what its type says:
        # a PHP crash is answered as upstream-error (CiviCRM failed) but, unlike an API
        # error envelope, it may be CiviCRM down for everyone (UNCLEAR).
        self.upstream = upstream if upstream is not None else self.problem.upstream
        super().__init__(f"{slug}: {detail}")

    @property
    def slug(self) -> Slug:
        return self.problem.slug

    @property
    def upstream_unhealthy(self) -> bool:
        """This failure says CiviCRM is down for every caller."""
        return self.upstream == UNHEALTHY

    @property
    def upstream_unclear(self) -> bool:
        """This failure may be CiviCRM down, or CiviCRM crashing on this call's input alone."""
        return self.upstream == UNCLEAR

    def body(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.problem.uri,
            "title": self.problem.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        if self.civicrm is not None:
            body["civicrm"] = self.civicrm
        return body


def invalid_request(detail: str) -> GatewayError:
    return GatewayError("invalid-request", detail)


# --- classification of CiviCRM's own failures ------------------------------------------------

# (pattern, slug). First match wins; patterns are CiviCRM's real messages (5.77 and earlier).
_MESSAGE_RULES: list[tuple[re.Pattern[str], Slug]] = [
    (re.compile(p, re.IGNORECASE), slug)
    for p, slug in cast(
        "list[tuple[str, Slug]]",
        [
            (
                r"invalid credential|login not permitted|cannot login|"
                r"SECURITY ALERT: Ajax requests can only be issued",
                "gateway-misconfigured",
            ),
            (r"SECURITY: All requests that modify the database must be http POST", "method-not-allowed"),
            (
                r"^Authorization failed|API permission check failed|^Unauthorized field|"
                r"ACL check failed|^Permission denied|insufficient permission",
                "civicrm-permission-denied",
            ),
            (r"^API \(.*\) does not exist|^Api \S+ \S+ version \d+ does not exist", "unknown-api"),
            (r"^Expected one \S+ but found 0\b|^Record not found", "record-not-found"),
            (r"^Expected one \S+ but found \d+", "civicrm-conflict"),
            (r"^Mandatory (values|key\(s\)) missing", "civicrm-validation"),
            (r"^DB Error: (constraint violation|foreign key)", "civicrm-validation"),
            (r"^DB Error: already exists|Duplicate entry", "civicrm-conflict"),
            (r"^DB Error", "upstream-error"),
            (r"^Invalid field", "unknown-field"),
            # 'Parameter "where" is required.' (delete, update with no where) and its longer form
            # 'Parameter "where" is required unless primary keys are supplied in values.'.
            (
                r"^Illegal operator|is not of the correct type|"
                r"^Parameter \"\w+\" is required\b|is required unless|"
                r"^Unknown api parameter|^Cannot use existing field name|^Illegal (field|join|expression)|"
                r"^Invalid (join|expression|orderBy|index)|^Unknown field|^Unable to parse sql expression",
                "civicrm-bad-request",
            ),
            (
                r"is not a valid|not a valid option|^Invalid value|must be (a|an|one of)\b",
                "civicrm-validation",
            ),
            (r"^Sorry an error occurred and your request was not completed", "upstream-error"),
            (r"Temporarily unavailable for maintenance", "upstream-maintenance"),
        ],
    )
]

_V3_CODES: dict[str, Slug] = {
    "not-found": "unknown-api",
    "mandatory_missing": "civicrm-validation",
    "unauthorized": "civicrm-permission-denied",
    "already exists": "civicrm-conflict",
    "constraint violation": "civicrm-validation",
}


def classify(message: str | None, *, status: int | None = None, error_code: int | str | None = None) -> Slug:
    """The problem slug for a CiviCRM failure, from its HTTP status, code and message."""
    message = (message or "").strip()
    if status == 401:
        return "gateway-misconfigured"
    if status == 403:
        return "civicrm-permission-denied"
    if status == 405:
        return "method-not-allowed"
    if isinstance(error_code, str) and error_code in _V3_CODES:
        return _V3_CODES[error_code]
    for pattern, slug in _MESSAGE_RULES:
        if pattern.search(message):
            return slug
    if status == 503:
        return "upstream-unavailable"
    if not message:
        return "upstream-invalid-response"
    return "civicrm-error"


_HINTS = {
    "gateway-misconfigured": "CiviCRM rejected the gateway's credentials; check the gateway's "
    "CiviCRM settings (API key, site key, auth style).",
    "upstream-error": "CiviCRM reported an internal failure.",
}


def from_civicrm(
    message: str | None,
    *,
    status: int | None = None,
    error_code: int | str | None = None,
    extra: dict[str, Any] | None = None,
) -> GatewayError:
    """Map one CiviCRM failure (REST, APIv3 envelope, cv or cv pipe) to a GatewayError."""
    slug = classify(message, status=status, error_code=error_code)
    civicrm: dict[str, Any] = {"error_code": error_code, "error_message": message}
    if extra:
        # Only well-known, harmless members of CiviCRM's error: never debug or trace data.
        civicrm.update({k: v for k, v in extra.items() if k in ("fields", "entity", "action")})
    detail = message or PROBLEM_TYPES[slug].description
    if slug == "gateway-misconfigured":
        detail = _HINTS[slug]
    elif slug == "upstream-error" and message and message.startswith("Sorry an error occurred"):
        detail = (
            "CiviCRM hid the error's text from the gateway's user; grant that user "
            "'view debug output' to see real messages. " + message
        )
    return GatewayError(slug, detail, civicrm=civicrm)
