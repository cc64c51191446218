"""Deterministic demo data: contacts with emails, phones, groups, tags and activities.

Runs inside the Sandbox's own transaction (the caller holds its lock), so it goes through
the engine's unlocked ``_api4`` entry point: the data is written exactly as API calls
would write it, custom fields included.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.sandbox.engine import Sandbox

FIRST = (
    "Maria",
    "James",
    "Aisha",
    "Chen",
    "Olga",
    "Pedro",
    "Fatima",
    "Liam",
    "Sofia",
    "Kenji",
    "Amara",
    "Noah",
    "Elena",
    "Tomas",
    "Priya",
    "Jonas",
    "Zainab",
    "Lucas",
    "Ingrid",
    "Omar",
)
LAST = (
    "Garcia",
    "Smith",
    "Okafor",
    "Wang",
    "Ivanova",
    "Silva",
    "Haddad",
    "Murphy",
    "Rossi",
    "Tanaka",
    "Mensah",
    "Brown",
    "Novak",
    "Berg",
    "Patel",
    "Schmidt",
    "Diallo",
    "Martin",
    "Larsen",
    "Khan",
)
ORGS = (
    "Green Valley Trust",
    "Riverside Food Bank",
    "Northside Arts Collective",
    "Open Books Foundation",
    "Harbour Youth Club",
    "Clean Air Alliance",
)
CITIES = ("Springfield", "Riverton", "Lakeside", "Hillview", "Portsmouth", "Fairfield")
GROUPS = ("Newsletter Subscribers", "Volunteers", "Major Donors", "Board Members")
TAGS = ("Supporter", "Press", "Partner")


def generate(sandbox: Sandbox, count: int, seed: int) -> None:
    """Add ``count`` contacts (about one in ten an organization) with related records."""
    rng = random.Random(seed)  # noqa: S311 (reproducible fixtures, not secrets)

    def call(entity: str, action: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        return sandbox._api4(entity, action, params, False, None, None)["values"]

    group_ids = [
        call(
            "Group",
            "create",
            {"values": {"title": title, "name": title.replace(" ", "_"), "group_type": "2"}},
        )[0]["id"]
        for title in GROUPS
    ]
    tag_ids = [call("Tag", "create", {"values": {"name": name}})[0]["id"] for name in TAGS]

    contacts: list[dict[str, Any]] = []
    for i in range(count):
        if i % 10 == 9:
            org = f"{ORGS[i % len(ORGS)]} {i // len(ORGS) + 1}"
            contacts.append({"contact_type": "Organization", "organization_name": org})
            continue
        first, last = rng.choice(FIRST), rng.choice(LAST)
        contacts.append(
            {
                "contact_type": "Individual",
                "first_name": first,
                "last_name": last,
                "gender_id": rng.choice((1, 2, 3)),
                "birth_date": f"{rng.randint(1940, 2005)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                "do_not_email": rng.random() < 0.1,
                "Constituent_Information.Most_Important_Issue": rng.choice(("Edu", "Env", "Cul")),
            }
        )
    saved = call("Contact", "save", {"records": contacts})

    emails, phones, addresses, memberships, tagged, activities = [], [], [], [], [], []
    for i, contact in enumerate(saved):
        cid = contact["id"]
        name = contact.get("first_name") or contact.get("organization_name") or "contact"
        user = f"{name.lower().replace(' ', '.')}.{cid}"
        emails.append(
            {"contact_id": cid, "email": f"{user}@example.org", "is_primary": True, "location_type_id": 1}
        )
        if rng.random() < 0.6:
            phones.append(
                {
                    "contact_id": cid,
                    "phone": f"555-{rng.randint(1000, 9999)}",
                    "is_primary": True,
                    "location_type_id": 1,
                    "phone_type_id": 1,
                }
            )
        if rng.random() < 0.5:
            addresses.append(
                {
                    "contact_id": cid,
                    "street_address": f"{rng.randint(1, 200)} Main St",
                    "city": rng.choice(CITIES),
                    "postal_code": f"{rng.randint(10000, 99999)}",
                    "country_id": 1228,
                    "is_primary": True,
                    "location_type_id": 1,
                }
            )
        for gid in rng.sample(group_ids, rng.randint(0, 2)):
            memberships.append({"group_id": gid, "contact_id": cid, "status": "Added"})
        if i % 4 == 0:
            tagged.append(
                {"entity_table": "civicrm_contact", "entity_id": cid, "tag_id": rng.choice(tag_ids)}
            )
        if i % 3 == 0:
            activities.append(
                {
                    "activity_type_id": rng.choice((1, 2)),
                    "source_contact_id": cid,
                    "subject": f"Follow-up with {name}",
                    "status_id": rng.choice((1, 2)),
                    "activity_date_time": f"2026-{rng.randint(1, 10):02d}-{rng.randint(1, 28):02d} 10:00:00",
                }
            )
    for entity, records in (
        ("Email", emails),
        ("Phone", phones),
        ("Address", addresses),
        ("GroupContact", memberships),
        ("EntityTag", tagged),
        ("Activity", activities),
    ):
        if records:
            call(entity, "save", {"records": records})
