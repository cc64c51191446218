"""One "is this a read" rule: what may use GET, what a read-only policy allows and what the
resilience layer may repeat agree, chains included."""

import pytest

from gateway.backends.resilience import is_safe
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
    assert is_safe(version, "Contact", action, {}) is read


def test_a_write_in_a_chain_makes_the_call_unsafe():
    assert is_safe(4, "Contact", "get", {"chain": {"n": ["Note", "get", {}]}}) is True
    assert is_safe(4, "Contact", "get", {"chain": {"n": ["Note", "create", {}]}}) is False
    assert is_safe(3, "Contact", "get", {"api.Note.create": {"note": "x"}}) is False
