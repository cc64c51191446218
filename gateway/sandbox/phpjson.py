"""JSON as PHP's json_encode() writes it, so wire answers are byte-compatible with CiviCRM:
non-ASCII as \\uXXXX (surrogate pairs beyond the BMP), "/" as "\\/", arrays keyed 0..n-1 and
empty arrays as JSON lists."""

from __future__ import annotations

import json
from typing import Any


def phpify(value: Any) -> Any:
    """Reshape Python data the way PHP arrays would encode."""
    if isinstance(value, dict):
        if not value:
            return []
        keys = list(value)
        if all(str(k) == str(i) for i, k in enumerate(keys)):
            return [phpify(v) for v in value.values()]
        return {str(k): phpify(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [phpify(v) for v in value]
    return value


def dumps(value: Any) -> str:
    text = json.dumps(phpify(value), ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return text.replace("/", "\\/")


def dumps_bytes(value: Any) -> bytes:
    return dumps(value).encode("ascii")
