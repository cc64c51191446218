"""One "is this a read" rule: what may use GET, what a read-only policy allows and what the
resilience layer may repeat agree, chains included."""

import pytest

from gateway.core.call import parse
from gateway.core.params import is_read_action


@pytest.mark.parametrize(
    ("version", "action", "read"),
    [
        (4, "get", True),
        (4, "getFields", True),
        (4, "autocomplete", True),
        (4, "checkAccess", True),
        (4, "create", False),
        (4, "delete", False),
        (3, "getsingle", True),
        (3, "autocomplete", False),
        (3, "create", False),
    ],
)
def test_repeatable_exactly_when_read(version, action, read):
    assert is_read_action(version, action) is read
    assert _safe(version, "Contact", action, {}) is read


def test_a_write_in_a_chain_makes_the_call_unsafe():
    assert _safe(4, "Contact", "get", {"chain": {"n": ["Note", "get", {}]}}) is True
    assert _safe(4, "Contact", "get", {"chain": {"n": ["Note", "create", {}]}}) is False
    assert _safe(3, "Contact", "get", {"api.Note.create": {"note": "x"}}) is False


def _safe(version: int, entity: str, action: str, params: dict) -> bool:
    """What the resilience layer asks of a call before repeating it."""
    return parse(version, entity, action, params).reads_only
