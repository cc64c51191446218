"""What one reader of the document may see: CiviCRM's metadata narrowed to a client's policy.

A client sees an entity's action only if its policy lets it call it, and a field only if the
policy lets it reference that field (:meth:`gateway.core.policy.Policy.field_allowed`). Credential
fields are in no document whoever reads it (:func:`gateway.web.openapi.document.usable_fields`).

Documents are cached by :func:`view_key`, a digest of what the narrowed metadata holds and of
the client's CiviCRM identity, not by client name: two clients with the same rights share one
document, and a client whose policy changes gets a new one.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import orjson

from gateway.core.schema import SAME_AS
from gateway.web.openapi.metadata import Metadata

if TYPE_CHECKING:
    from gateway.core.policy import Policy
    from gateway.flow.clients import Client


def may_call(policy: Policy, version: int, entity: str, action: str) -> bool:
    """Whether the policy lets a client call ``entity.action`` at all (its own rule)."""
    return policy.offers(version, entity, action)


def narrow(metadata: Metadata, policy: Policy) -> Metadata:
    """The entities, actions and fields ``policy`` lets a client use."""
    entities: list[dict[str, Any]] = []
    for ent in metadata.entities:
        name = ent["name"]
        actions = [
            a
            for a in ent.get("actions") or []
            if isinstance(a, dict) and isinstance(a.get("name"), str) and may_call(policy, 4, name, a["name"])
        ]
        if not actions:
            continue
        fields = {
            action: [
                f
                for f in found
                if isinstance(f, dict)
                and isinstance(f.get("name"), str)
                and policy.field_allowed(name, f["name"], SAME_AS.get(name.lower()))
            ]
            for action, found in (ent.get("fields") or {}).items()
            if isinstance(found, list)
        }
        entities.append({**ent, "actions": actions, "fields": fields})
    return Metadata(
        entities, source=metadata.source, fetched_at=metadata.fetched_at, problems=metadata.problems
    )


def identity_digest(client: Client | None) -> str:
    """Who CiviCRM sees for the client's calls, as a digest (never the key itself)."""
    identity = client.identity if client is not None else None
    if identity is None:
        return "gateway"
    text = f"{identity.api_key or ''}\0{identity.cv_user or ''}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def view_key(narrowed: Metadata | None, client: Client | None) -> str:
    """A digest of everything the document depends on besides the metadata itself:
    the entities, actions and fields it shows, and the client's CiviCRM identity."""
    digest = hashlib.sha256(identity_digest(client).encode())
    if narrowed is None:
        digest.update(b"\0generic")
    else:
        for ent in narrowed.entities:
            shown = [
                ent["name"],
                [a["name"] for a in ent["actions"]],
                {k: [f["name"] for f in v] for k, v in ent["fields"].items()},
            ]
            digest.update(orjson.dumps(shown))
    return digest.hexdigest()[:32]
