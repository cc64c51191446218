"""Feed cursors: opaque to clients, signed so that none can be forged or moved.

A cursor names its feed (lineage), the client and entity it was issued to, the keyset position
(``modified_date``, ``id``), the largest id known when the feed started (newer ids are
``created``) and the last change sequence number the holder has received. It is HMAC-signed
with a key kept in the state folder: changing any part of it (another entity, another
client's feed, a position) breaks the signature, which is a 400.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import orjson

from gateway.core.errors import invalid_request

_VERSION = 1
_MAC_BYTES = 16
MAX_CURSOR_CHARS = 1024


@dataclass(frozen=True)
class Position:
    lineage: str  # the feed this cursor belongs to (its query and state)
    client: str
    entity: str
    modified: str  # keyset: the last modified_date passed ("" in a snapshot feed)
    id: int  # keyset: the last id passed at that date
    max_id: int  # ids above this are reported as created
    seq: int  # changes numbered up to this one were received

    def moved(self, **changes: object) -> Position:
        return replace(self, **changes)  # type: ignore[arg-type]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def load_key(path: Path) -> bytes:
    """The signing key in ``path``, created (readable by this user only) on first use."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_bytes(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another worker made it first
            return path.read_bytes()
        with os.fdopen(fd, "wb") as out:
            out.write(key)
        return key


class CursorCodec:
    def __init__(self, key: bytes | Callable[[], bytes]) -> None:
        """``key``: the key, or how to get it on first use."""
        self._key = key

    def _mac(self, payload: bytes) -> bytes:
        if callable(self._key):
            self._key = self._key()
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:_MAC_BYTES]

    def encode(self, p: Position) -> str:
        payload = orjson.dumps([_VERSION, p.lineage, p.client, p.entity, p.modified, p.id, p.max_id, p.seq])
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def decode(self, text: str) -> Position:
        """The position a cursor holds; a 400 for anything this gateway did not issue."""
        bad = invalid_request(
            "The cursor is not one this gateway issued (it is opaque: pass X-Next-Cursor or a "
            "change's _change.cursor as given, or omit it to start from now)."
        )
        if not isinstance(text, str) or not 3 <= len(text) <= MAX_CURSOR_CHARS:
            raise bad
        body, _, mac = text.partition(".")
        try:
            payload, given = _unb64(body), _unb64(mac)
        except (ValueError, TypeError):
            raise bad from None
        if not hmac.compare_digest(given, self._mac(payload)):
            raise bad
        try:
            version, lineage, client, entity, modified, id_, max_id, seq = orjson.loads(payload)
        except (orjson.JSONDecodeError, ValueError, TypeError):
            raise bad from None
        if version != _VERSION:
            raise bad
        return Position(lineage, client, entity, modified, int(id_), int(max_id), int(seq))
