"""OptionGroup/OptionValue, Event, Participant, Membership and serialized fields."""

from __future__ import annotations

import pytest

from gateway.sandbox.engine import Sandbox
from gateway.sandbox.errors import CiviError


def test_option_lists_back_the_pseudoconstants(sb: Sandbox) -> None:
    types = sb.api4(
        "OptionValue",
        "get",
        {"select": ["name", "value"], "where": [["option_group_id:name", "=", "activity_type"]], "limit": 2},
    )["values"]
    assert types == [
        {"id": 6, "name": "Meeting", "value": "1"},
        {"id": 7, "name": "Phone Call", "value": "2"},
    ]
    v3 = sb.api3("OptionValue", "get", {"option_group_id": "gender", "sequential": 1, "return": "name"})
    assert [r["name"] for r in v3["values"]] == ["Female", "Male", "Other"]
    group = sb.api4("OptionGroup", "create", {"values": {"name": "colours"}})["values"][0]
    assert group["option_value_fields"] == ["name", "label", "description"]


def test_events_participants_and_memberships(sb: Sandbox, ada: int) -> None:
    with pytest.raises(
        CiviError,
        match=r"^Mandatory values missing from Api4 "
        r"Participant::create: contact_id, event_id$",
    ):
        sb.api4("Participant", "create", {"values": {}})
    event = sb.api4(
        "Event",
        "create",
        {
            "values": {
                "title": "Conf",
                "event_type_id:name": "Conference",
                "start_date": "2026-12-01 10:00",
                "max_participants": 10,
            }
        },
    )["values"][0]
    assert event["event_type_id"] == 1
    sb.api4(
        "Participant", "create", {"values": {"contact_id": ada, "event_id": event["id"], "role_id": [1, 2]}}
    )
    got = sb.api4("Participant", "get", {"select": ["role_id", "role_id:label", "event_id.title"]})["values"]
    assert got == [
        {"id": 1, "role_id": ["1", "2"], "role_id:label": ["Attendee", "Volunteer"], "event_id.title": "Conf"}
    ]
    left = sb.api4("Event", "get", {"select": ["remaining_participants"]})["values"]
    assert left == [{"id": event["id"], "remaining_participants": 9}]
    member = sb.api4(
        "Membership", "create", {"values": {"contact_id": ada, "membership_type_id:name": "Student"}}
    )["values"][0]
    assert member["membership_type_id"] == 2 and member["status_id"] == 1
    got = sb.api4("Membership", "get", {"select": ["is_primary_member"]})["values"]
    assert got == [{"id": member["id"], "is_primary_member": True}]


def test_group_type_is_a_serialized_list(sb: Sandbox) -> None:
    sb.api4("Group", "create", {"values": {"title": "T", "group_type": ["1", "2"]}})
    got = sb.api4(
        "Group", "get", {"select": ["group_type", "group_type:label", "contact_count", "children"]}
    )["values"]
    assert got == [
        {
            "id": 1,
            "group_type": ["1", "2"],
            "group_type:label": ["Access Control", "Mailing List"],
            "contact_count": 0,
            "children": None,
        }
    ]
    spec = sb.api4(
        "Group", "getFields", {"select": ["name", "serialize"], "where": [["name", "=", "group_type"]]}
    )["values"]
    assert spec == [{"name": "group_type", "serialize": 1}]
