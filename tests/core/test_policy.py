"""The access policy over every call a request would trigger."""

import pytest

from gateway.errors import GatewayError
from gateway.policy import Policy, check, triggered_calls


def labels(version, entity, action, params):
    return [c.label for c in triggered_calls(version, entity, action, params)]


def test_enumerates_chains_joins_and_v3_chaining():
    params = {"join": [["Email AS email", "LEFT", ["id", "=", "email.contact_id"]]],
              "chain": {"notes": ["Note", "get", {"chain": {"x": ["Tag", "delete", {}]}}],
                        "acts": ["Activity", "create", {"values": {}}]}}
    assert labels(4, "Contact", "get", params) == [
        "v4:Contact.get", "v4:Note.get", "v4:Tag.delete", "v4:Activity.create", "v4:Email.get"]
    v3 = {"id": 1, "api.Email.get": {}, "api.Note.create": [{"note": "a"}, {"note": "b"}]}
    assert labels(3, "Contact", "get", v3) == [
        "v3:Contact.get", "v3:Email.get", "v3:Note.create", "v3:Note.create"]


@pytest.mark.parametrize("params", [
    {"chain": {"x": ["Contact;rm", "get"]}}, {"chain": {"x": "Contact"}}, {"chain": ["x"]},
    {"join": [["../Email AS e"]]}, {"join": "Email"},
])
def test_malformed_chains_are_refused(params):
    with pytest.raises(GatewayError) as info:
        list(triggered_calls(4, "Contact", "get", params))
    assert info.value.status == 400


def test_allow_deny_globs():
    policy = Policy.from_mapping({"allow": ["v4:Contact.get*", "v4:*.getFields", "Email.get"],
                                  "deny": ["v4:Contact.getChecksum"]})
    assert policy.permits("v4:Contact.get") and policy.permits("v4:Contact.getActions")
    assert policy.permits("v4:Activity.getFields") and policy.permits("v3:Email.get")
    assert not policy.permits("v4:Contact.create") and not policy.permits("v4:Activity.get")
    assert not policy.permits("v4:Contact.getChecksum")


def denied(policy, version, entity, action, params):
    with pytest.raises(GatewayError) as info:
        check(policy, version, entity, action, params)
    assert info.value.status == 403 and info.value.slug == "gateway-policy-denied"
    return info.value.detail


def test_chained_write_is_checked():
    policy = Policy.from_mapping({"allow": ["Contact.get"]})
    assert "v4:Note.create" in denied(policy, 4, "Contact", "get",
                                      {"chain": {"n": ["Note", "create", {"values": {}}]}})
    assert "v3:Note.delete" in denied(policy, 3, "Contact", "get", {"api.Note.delete": {}})


def test_read_only():
    policy = Policy.from_mapping({"read_only": True})
    check(policy, 4, "Contact", "get", {})
    assert "read-only" in denied(policy, 4, "Contact", "create", {"values": {}})
    assert "read-only" in denied(policy, 4, "Contact", "get", {"chain": {"x": ["Tag", "save", {}]}})


def test_credentials_refused_unless_allowed():
    policy = Policy()
    for params in ({"select": ["api_key"]}, {"where": [["api_key", "=", "x"]]},
                   {"where": [["OR", [["id", "=", 1], ["contact_id.api_key", "IS NOT NULL"]]]]},
                   {"orderBy": {"api_key": "ASC"}}):
        denied(policy, 4, "Contact", "get", params)
    denied(policy, 4, "Contact", "update", {"values": {"api_key": "new"}, "where": [["id", "=", 1]]})
    denied(policy, 3, "Contact", "get", {"return": "id,api_key"})
    denied(policy, 4, "Contact", "getChecksum", {})
    check(Policy.from_mapping({"credential_fields": True}), 4, "Contact", "get", {"select": ["api_key"]})


def test_implicit_joins_need_read_everything():
    restricted = Policy.from_mapping({"allow": ["v4:Email.get"]})
    denied(restricted, 4, "Email", "get", {"select": ["contact_id.display_name"]})
    check(restricted, 4, "Email", "get", {"select": ["email"]})
    check(Policy(), 4, "Email", "get", {"select": ["contact_id.display_name"]})
    narrowed = Policy.from_mapping({"deny": ["v4:Contact.get"]})
    denied(narrowed, 4, "Email", "get", {"where": [["contact_id.display_name", "=", "x"]]})
    check(Policy.from_mapping({"deny": ["v4:Contact.delete"]}), 4, "Email", "get",
          {"select": ["contact_id.display_name"]})


def test_max_limit():
    policy = Policy.from_mapping({"max_limit": 50})
    assert check(policy, 4, "Contact", "get", {})["limit"] == 50
    assert check(policy, 4, "Contact", "get", {"limit": 0})["limit"] == 50
    assert check(policy, 4, "Contact", "get", {"limit": 10})["limit"] == 10
    assert "exceeds" in denied(policy, 4, "Contact", "get", {"limit": 51})
    assert "exceeds" in denied(policy, 4, "Contact", "get", {"chain": {"e": ["Email", "get", {"limit": 99}]}})
    assert check(policy, 3, "Contact", "get", {})["options"]["limit"] == 50
    denied(policy, 3, "Contact", "get", {"options": {"limit": 1000}})


@pytest.mark.parametrize("data", [
    {"allow": "v4:*"}, {"max_limit": 0}, {"rate_limit": "lots"}, {"concurrency": -1}, {"bogus": 1},
])
def test_bad_policy_config(data):
    with pytest.raises(ValueError):
        Policy.from_mapping(data)
