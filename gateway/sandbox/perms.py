"""Which APIv4 actions a user may run, as CiviCRM 5.77's getActions shows them.

getActions lists only the actions the current user has the permissions for
(``AbstractAction::isAuthorized``): CRM_Core_Permission::getEntityActionPermissions() for the
entity and action, else the entity's 'default', else the global 'default' ('administer
CiviCRM'); the metadata actions need 'access CiviCRM' only; ``save`` needs what create and
update need, ``replace`` also what delete needs. The entries below are that table for the
emulated entities (with the APIv4 classes' own overrides), as the real site shows it.
Running an action checks permissions again (engine.Sandbox._authorize), with the record-level
rules CiviCRM adds for contact data.
"""

from __future__ import annotations

from gateway.sandbox.schema import ENTITIES

ADMIN = ("administer CiviCRM",)
META = ("autocomplete", "checkAccess", "getActions", "getFields", "getLinks")
CONTACT_DATA: dict[str, tuple[str, ...]] = {"default": ()}  # checked per record instead

# entity -> action (or "default") -> every permission it needs
TABLE: dict[str, dict[str, tuple[str, ...]]] = {
    "Contact": {
        "create": ("access CiviCRM", "add contacts"),
        "delete": ("access CiviCRM", "delete contacts"),
        "get": (),
        "update": (),
        "default": ADMIN,
    },
    "Address": CONTACT_DATA,
    "Email": CONTACT_DATA,
    "Phone": CONTACT_DATA,
    "EntityTag": CONTACT_DATA,
    "Note": CONTACT_DATA,
    "GroupContact": CONTACT_DATA,
    "Relationship": CONTACT_DATA,
    "Tag": {
        "get": ("access CiviCRM",),
        "create": ("access CiviCRM",),
        "update": ("access CiviCRM",),
        "default": ADMIN,
    },
    "Group": {
        "get": ("access CiviCRM",),
        "refresh": ("access CiviCRM",),
        "default": ("access CiviCRM", "edit groups"),
    },
    "Activity": {
        "get": ("access CiviCRM",),
        "delete": ("access CiviCRM", "delete activities"),
        "default": ("access CiviCRM", "view all activities"),
    },
    "OptionGroup": {"get": ("access CiviCRM",), "default": ADMIN},
    "OptionValue": {"get": ("access CiviCRM",), "default": ADMIN},
    "Contribution": {"get": ("access CiviCRM", "access CiviContribute"), "default": ADMIN},
    "Event": {"get": ("access CiviCRM", "access CiviEvent"), "default": ADMIN},
    "Participant": {"get": ("access CiviCRM", "access CiviEvent"), "default": ADMIN},
    "Membership": {"get": ("access CiviCRM", "access CiviMember"), "default": ADMIN},
}


def needs(entity: str, action: str) -> tuple[str, ...]:
    """Every permission ``action`` of ``entity`` needs."""
    if action in META:
        return ("access CiviCRM",)
    if action == "save":
        return tuple(dict.fromkeys((*needs(entity, "create"), *needs(entity, "update"))))
    if action == "replace":
        return tuple(dict.fromkeys((*needs(entity, "save"), *needs(entity, "delete"))))
    table = TABLE.get(entity)
    if table is None:
        ent = ENTITIES.get(entity)
        if ent is None:
            return ADMIN
        if action == "get":
            return tuple(p for p in ("access CiviCRM", ent.read_perm) if p)
        return (
            "access CiviCRM",
            ent.delete_perm if action == "delete" and ent.delete_perm else ent.write_perm,
        )
    found = table.get(action, table.get("default", ADMIN))
    return found


def visible(entity: str, action: str, perms: frozenset[str]) -> bool:
    """Does getActions list ``action`` for a user with ``perms``?"""
    return all(p in perms for p in needs(entity, action))
