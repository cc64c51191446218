"""A problem type carries what a failure of it means for the flow around the call (issue 27):
whether CiviCRM ran it, whether CiviCRM is down, whether a read may be sent again; and its
name is typed, so a misspelt one is a mypy error."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gateway.backends.base import TransientError
from gateway.core.errors import PROBLEM_TYPES, UNHEALTHY, GatewayError
from gateway.flow.idempotency import outcome_of
from tests.conftest import ROOT

# The gateway's own refusals and failures to reach CiviCRM: nothing ran.
NEVER = {
    "invalid-request",
    "unauthenticated",
    "gateway-policy-denied",
    "rate-limited",
    "upstream-unavailable",
}
# Sent, and the answer lost: it may have run.
MAYBE = {"upstream-timeout", "upstream-invalid-response", "internal-error"}
# CiviCRM answered: its refusal is the call's answer.
YES = {"civicrm-permission-denied", "civicrm-validation", "civicrm-conflict", "unknown-field"}


@pytest.mark.parametrize(("slugs", "ran"), [(NEVER, "never"), (MAYBE, "maybe"), (YES, "yes")])
def test_what_a_failure_says_about_the_call_having_run(slugs: set[str], ran: str) -> None:
    for slug in slugs:
        assert PROBLEM_TYPES[slug].ran == ran, slug
        expected = {"never": "release", "maybe": "unknown", "yes": "store"}[ran]
        assert outcome_of(GatewayError(slug, "x")) == expected, slug  # type: ignore[arg-type]


def test_a_connection_never_made_releases_the_key_whatever_its_type() -> None:
    assert outcome_of(TransientError("upstream-invalid-response", "x", reached=False)) == "release"
    assert outcome_of(TransientError("upstream-invalid-response", "x", reached=True)) == "unknown"


def test_only_an_unreachable_civicrm_is_retried_as_a_read_and_counts_for_the_breaker() -> None:
    assert {t.slug for t in PROBLEM_TYPES.values() if t.retry_read} == {"upstream-unavailable"}
    assert PROBLEM_TYPES["upstream-unavailable"].upstream == UNHEALTHY
    assert PROBLEM_TYPES["civicrm-error"].upstream is None  # one call's own error


def test_a_misspelt_problem_type_fails_mypy(tmp_path) -> None:  # type: ignore[no-untyped-def]
    snippet = tmp_path / "typo.py"
    snippet.write_text(
        "from gateway.core.errors import GatewayError\n"
        "GatewayError('invalid-requst', 'a typo')\n"
        "GatewayError('invalid-request', 'fine')\n"
    )
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "--follow-imports=silent", str(snippet)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 1, checked.stdout
    assert 'typo.py:2: error: Argument 1 to "GatewayError" has incompatible type' in checked.stdout
    assert "typo.py:3" not in checked.stdout
