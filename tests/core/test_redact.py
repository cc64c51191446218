"""Secrets are masked in every log record, whatever handler prints it."""

import logging

from gateway.core.redact import MASK, Redactor, install_log_redaction


def test_redactor_longest_first():
    r = Redactor(["abcd", "abcdefgh"])
    assert r.text("x abcdefgh y abcd") == f"x {MASK} y {MASK}"
    assert Redactor().text("nothing") == "nothing"


def test_log_records_are_masked(caplog, restore_redactor):
    install_log_redaction(["topsecret-value-1"])
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("anything").debug("key=%s", "topsecret-value-1")
        try:
            raise ValueError("boom topsecret-value-1")
        except ValueError:
            logging.getLogger("x").exception("failed")
    assert "topsecret-value-1" not in caplog.text
    assert MASK in caplog.text and "boom" in caplog.text


def test_the_redactor_is_restored_after_a_test():
    """What ``restore_redactor`` does: a secret added inside is unmasked again outside."""
    from gateway.core.redact import REDACTOR
    from tests.conftest import redactor_restored

    with redactor_restored():
        install_log_redaction(["topsecret-value-2"])
        assert REDACTOR.text("topsecret-value-2") == MASK
    assert REDACTOR.text("topsecret-value-2") == "topsecret-value-2"


def test_redactor_masks_json_keys_and_values_alike():
    r = Redactor(["s3cret"])
    doc = {"a s3cret key": ["x s3cret", 3, None, {"k": "s3cret"}], "n": 1.5}
    assert r.json(doc) == {f"a {MASK} key": [f"x {MASK}", 3, None, {"k": MASK}], "n": 1.5}


def test_redactor_json_searches_the_serialised_value_then_masks_what_it_finds():
    r = Redactor(["s3cret"])
    clean = {"a": ["b", {"c": 1}], "d": "e"}
    assert r.json(clean) is clean  # nothing to mask: not walked, not copied
    found = {"a": [{"deep": "x-s3cret-y"}]}
    assert r.json(found) == {"a": [{"deep": f"x-{MASK}-y"}]}
    # A number that reads like a secret only costs the walk; nothing is masked but strings.
    assert Redactor(["123"]).json({"n": 123, "s": "a123"}) == {"n": 123, "s": f"a{MASK}"}


def test_redactor_json_with_a_secret_json_escapes_walks_every_string():
    r = Redactor(['quo"te\\back'])
    assert r.json({"k": ['x quo"te\\back y']}) == {"k": [f"x {MASK} y"]}
    # Keys that are not strings cannot be serialised: walked, as before.
    assert Redactor(["s3cret"]).json({"k": ["s3cret"]}) == {"k": [MASK]}
