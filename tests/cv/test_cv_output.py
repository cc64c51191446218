"""Reading the real cv's output (the captures, not the stand-in's): the console box on stderr
joined back into CiviCRM's message and classified, and JSON found among PHP notices."""

from __future__ import annotations

import pytest

from gateway.backends.cvproc import ProcessResult, extract_json, failure_from_stderr
from tests.cv.captures import SAMPLES, parse_cases

SETTINGS_MESSAGE = (
    "Failed to locate civicrm.settings.php. By default, this tool searches the parent "
    "directories for a standard CMS (Drupal, WordPress, etal) and standard civicrm.settings.php."
    " Symlinks and multisite configurations may interfere. To customize, set variable "
    "CIVICRM_SETTINGS to point to the preferred civicrm.settings.php."
)

EXPECTED = {
    "cv-4": ("unknown-api", "API (Foo, get) does not exist (or the extension it belongs to is not enabled)."),
    "cv-5": ("unknown-field", "Invalid field 'no_such_field'"),
    "cv-6": (
        "upstream-error",
        "cv failed with a PHP error: array_merge(): Argument #2 must be of type array, null given",
    ),
    "cv-7": ("unknown-api", "Api Contact frobnicate version 4 does not exist."),
    "cv-10": (
        "gateway-misconfigured",
        "cv could not act as the configured CiviCRM user: Failed to determine contactID for user=nobody",
    ),
    "cv-11": ("upstream-error", f"cv could not boot CiviCRM: {SETTINGS_MESSAGE}"),
    "cv-15": (
        "civicrm-bad-request",
        'Parameter "where" is required unless primary keys are supplied in values.',
    ),
}


def test_real_error_boxes() -> None:
    cases = {
        c.name: c
        for c in parse_cases((SAMPLES / "cv-api4.txt").read_text())
        + parse_cases((SAMPLES / "cv-apiv3-and-more.txt").read_text())
    }
    for name, (slug, detail) in EXPECTED.items():
        case = cases[name]
        error = failure_from_stderr(ProcessResult(case.code, case.stdout.encode(), case.stderr.encode()))
        assert (error.slug, error.detail) == (slug, detail), name


def test_notices_and_prefixes_around_json() -> None:
    notice = "PHP Deprecated:  Creation of dynamic property X::$y is deprecated in /srv/x.php on line 3"
    assert extract_json(f'{notice}\n[{{"id": 2}}]\n') == [{"id": 2}]
    assert extract_json(f"\nDeprecated: foo in /a.php on line 1\n[1]\n{notice}\n") == [1]
    assert extract_json('[22-Nov-2026 10:00:00 UTC] PHP Warning: x\n{"a": [1]}\n') == {"a": [1]}
    assert extract_json(f"{notice}\n11\n\n") == 11
    for garbage in ("", "Segmentation fault", "<b>Fatal error</b>", "[1, 2"):
        with pytest.raises(ValueError):
            extract_json(garbage)


def test_unrunnable_context() -> None:
    for code, stderr in (
        (127, "env: 'cv': No such file or directory"),
        (1, "Error response from daemon: container abc is not running"),
        (255, "ssh: Could not resolve hostname civi: Name or service not known"),
    ):
        error = failure_from_stderr(ProcessResult(code, b"", stderr.encode()))
        assert error.slug == "upstream-unavailable", stderr
        assert "civi" not in error.detail  # the host name stays in the log
