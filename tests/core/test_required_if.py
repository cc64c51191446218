"""CiviCRM 5.77's ``required_if`` conditions, as the gateway reads them before a create."""

from __future__ import annotations

import pytest

from gateway.core.validate import evaluate_condition

SMS = '!empty($values.is_active) && (empty($values.mode) || $values.mode !== "SMS")'


@pytest.mark.parametrize(
    ("expression", "values", "expected"),
    [
        # Tag (TagCreationSpecProvider): a name or a label
        ("empty($values.label)", {}, True),
        ("empty($values.label)", {"label": "Press"}, False),
        ("empty($values.label)", {"label": ""}, True),
        ("empty($values.label)", {"label": "0"}, True),  # PHP's empty()
        # ActionScheduleSpecProvider
        (SMS, {"is_active": True}, True),
        (SMS, {"is_active": True, "mode": "SMS"}, False),
        (SMS, {"is_active": False}, False),
        (
            '!empty($values.limit_to) && $values.recipient === "group"',
            {"limit_to": 1, "recipient": "group"},
            True,
        ),
        # anything else: the gateway cannot tell, CiviCRM decides
        ("count($values.x) > 1", {}, None),
        ("empty($values.x", {}, None),
    ],
)
def test_required_if(expression: str, values: dict[str, object], expected: bool | None) -> None:
    assert evaluate_condition(expression, values) is expected
