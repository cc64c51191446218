"""The error table: CiviCRM's real failures (from the captured samples) and their HTTP mapping."""

import pytest

from gateway.core.errors import PROBLEM_TYPES, GatewayError, classify, from_civicrm
from gateway.core.results import Records, response_body, v3_records, v4_records

# (message, HTTP status CiviCRM answered, error_code, expected gateway status, problem type):
# all real messages from CiviCRM 5.77 / cv 0.3.56 (tests/fixtures/samples). The type too, since
# a message that loses its rule falls through to another 400 (civicrm-error).
CASES = [
    (
        "API (Foo, get) does not exist (or the extension it belongs to is not enabled).",
        500,
        0,
        404,
        "unknown-api",
    ),
    ("Api Contact frobnicate version 4 does not exist.", 500, 0, 404, "unknown-api"),
    (
        "API (Foo, get) does not exist (join the API team and implement it!)",
        None,
        "not-found",
        404,
        "unknown-api",
    ),
    (
        "API (Contact, frobnicate) does not exist (join the API team and implement it!)",
        None,
        "not-found",
        404,
        "unknown-api",
    ),
    ("Invalid field 'no_such_field'", 500, 0, 400, "unknown-field"),
    ("Illegal operator", 500, 0, 400, "civicrm-bad-request"),
    ('Parameter "limit" is not of the correct type. Expecting int.', 500, 0, 400, "civicrm-bad-request"),
    (
        'Parameter "where" is required unless primary keys are supplied in values.',
        500,
        0,
        400,
        "civicrm-bad-request",
    ),
    ('Parameter "where" is required.', 500, 0, 400, "civicrm-bad-request"),
    ("Cannot use existing field name as alias", 500, 0, 400, "civicrm-bad-request"),
    ("Unknown api parameter: setFoo", 500, 0, 400, "civicrm-bad-request"),
    ("DB Error: constraint violation", 500, 0, 422, "civicrm-validation"),
    (
        "Mandatory values missing from Api4 Email::create: email",
        500,
        "mandatory_missing",
        422,
        "civicrm-validation",
    ),
    (
        "Mandatory key(s) missing from params array: contact_type",
        None,
        "mandatory_missing",
        422,
        "civicrm-validation",
    ),
    ("Expected one Contact but found 9", None, None, 409, "civicrm-conflict"),
    ("Expected one Contact but found 0", None, None, 404, "record-not-found"),
    (
        "Sorry an error occurred and your request was not completed. (Error ID: 3fCq-DWkB-NRkX)",
        403,
        "1",
        403,
        "civicrm-permission-denied",
    ),
    (
        "Sorry an error occurred and your request was not completed. (Error ID: 3fCq-DWkB-NRkX)",
        500,
        "1",
        502,
        "upstream-error",
    ),
    ("Authorization failed: you do not have permission", 500, 0, 403, "civicrm-permission-denied"),
    ("HTTP 401 Invalid credential", 401, None, 502, "gateway-misconfigured"),
    (
        "HTTP 401 Login not permitted. Must satisfy guard (site_key, perm).",
        401,
        None,
        502,
        "gateway-misconfigured",
    ),
    ("FATAL: Invalid credential", None, None, 502, "gateway-misconfigured"),
    (
        "SECURITY ALERT: Ajax requests can only be issued by javascript clients, eg. CRM.api4().",
        400,
        400,
        502,
        "gateway-misconfigured",
    ),
    (
        "SECURITY: All requests that modify the database must be http POST, not GET.",
        405,
        405,
        405,
        "method-not-allowed",
    ),
    ("Temporarily unavailable for maintenance.", 503, None, 503, "upstream-maintenance"),
    ("DB Error: unknown error", 500, 0, 502, "upstream-error"),
    ("Some other complaint from an extension", 500, 0, 400, "civicrm-error"),
]


@pytest.mark.parametrize("message,status,code,expected,slug", CASES)
def test_classification(message, status, code, expected, slug):
    error = from_civicrm(message, status=status, error_code=code)
    assert (error.status, error.slug) == (expected, slug)
    assert classify(message, status=status, error_code=code) == slug


def test_body_is_problem_json_without_debug():
    error = from_civicrm(
        "Invalid field 'x'",
        status=500,
        error_code=0,
        extra={"debug": {"sql": ["SELECT secret"]}, "trace": "x", "fields": ["x"]},
    )
    body = error.body("/v4/Contact/get")
    assert body["type"] == "/problems/unknown-field"
    assert body["status"] == 400 and body["title"] and body["detail"] == "Invalid field 'x'"
    assert body["civicrm"] == {"error_code": 0, "error_message": "Invalid field 'x'", "fields": ["x"]}
    assert "SELECT" not in str(body) and "trace" not in str(body)


def test_every_type_has_a_documented_status():
    assert all(400 <= t.status <= 599 for t in PROBLEM_TYPES.values())
    statuses = {t.slug: t.status for t in PROBLEM_TYPES.values()}
    assert statuses["gateway-misconfigured"] == 502 and statuses["upstream-timeout"] == 504


# --- envelopes ---------------------------------------------------------------------------------


def test_v4_envelope_and_count_matched():
    env = {
        "values": [{"id": 2}],
        "entity": "Contact",
        "action": "get",
        "debug": None,
        "version": 4,
        "count": 7,
        "countFetched": 1,
        "countMatched": 7,
    }
    records = v4_records(env)
    assert records == [{"id": 2}] and records.count_matched == 7
    body, headers = response_body(4, "get", records)
    assert body == [{"id": 2}] and headers == {"X-Result-Count": "1", "X-Total-Count": "7"}


def test_v4_error_envelope_raises():
    with pytest.raises(GatewayError) as info:
        v4_records({"error_code": 0, "error_message": "Illegal operator", "status": 500})
    assert (info.value.status, info.value.slug) == (400, "civicrm-bad-request")


def test_maintenance_envelope():
    with pytest.raises(GatewayError) as info:
        v4_records(
            {"status_code": 503, "status_message": "Temporarily unavailable for maintenance."}, status=503
        )
    assert (info.value.status, info.value.slug) == (503, "upstream-maintenance")


@pytest.mark.parametrize("bad", ["text", 3, {"entity": "Contact"}, {"values": 3}])
def test_v4_odd_shapes_are_invalid_response(bad):
    with pytest.raises(GatewayError) as info:
        v4_records(bad)
    assert info.value.slug == "upstream-invalid-response" and info.value.status == 502


def test_v3_shapes():
    assert v3_records("getcount", {"is_error": 0, "result": 10}) == [10]
    assert v3_records("getcount", 11) == [11]
    assert v3_records("getvalue", {"is_error": 0, "result": "Standalone Admin"}) == ["Standalone Admin"]
    single = v3_records("getsingle", {"id": "2", "display_name": "A", "is_error": 0})
    assert single == [{"id": "2", "display_name": "A"}]
    keyed = v3_records("get", {"is_error": 0, "count": 1, "values": {"2": {"id": "2"}}})
    assert keyed == [{"id": "2"}]
    assert response_body(3, "getcount", Records([10])) == (10, {})
    assert response_body(3, "getsingle", Records([{"id": "2"}])) == ({"id": "2"}, {})
    assert response_body(3, "getvalue", Records([None])) == (None, {})


def test_v3_error_envelope():
    with pytest.raises(GatewayError) as info:
        v3_records(
            "create",
            {
                "fields": ["contact_type"],
                "error_code": "mandatory_missing",
                "entity": "Contact",
                "action": "create",
                "is_error": 1,
                "error_message": "Mandatory key(s) missing from params array: contact_type",
            },
        )
    assert (info.value.status, info.value.slug) == (422, "civicrm-validation")
    assert info.value.civicrm["fields"] == ["contact_type"]


def test_credentials_stripped_at_any_depth():
    records = Records(
        [
            {
                "id": 2,
                "api_key": "k",
                "contact_id.api_key": "k2",
                "chained": [{"id": 3, "api_key": "k3", "nested": {"api_key": "k4"}}],
            }
        ],
        count_matched=1,
    )
    body, _ = response_body(4, "get", records)
    assert body == [{"id": 2, "chained": [{"id": 3, "nested": {}}]}]
    assert "k" not in str(body).replace("chained", "")


@pytest.mark.parametrize("action", ["update", "delete"])
async def test_write_without_where_is_bad_request(gw_sandbox, action):
    """Update and delete with nothing to select records by are the same mistake, one type."""
    params = {"values": {"job_title": "x"}} if action == "update" else {}
    response = await gw_sandbox.post(f"/v4/Contact/{action}", json=params)
    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "/problems/civicrm-bad-request"
    assert body["detail"].startswith('Parameter "where" is required')
