"""``civicrm-gateway --help`` reads as plain text, and every option says what it is for."""

from __future__ import annotations

import argparse

from gateway.cli.main import build_parser


def _parsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    found = {"civicrm-gateway": parser}
    pending = [parser]
    while pending:
        current = pending.pop()
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    found[sub.prog] = sub
                    pending.append(sub)
    return found


def test_help_has_no_restructuredtext_and_every_option_is_explained():
    parsers = _parsers()
    assert {
        "civicrm-gateway serve",
        "civicrm-gateway sandbox",
        "civicrm-gateway export",
        "civicrm-gateway openapi",
        "civicrm-gateway token create",
    } <= set(parsers)
    for prog, parser in parsers.items():
        text = parser.format_help()
        assert "``" not in text, prog
        for action in parser._actions:
            if action.option_strings and not isinstance(action, argparse._HelpAction):
                assert action.help, f"{prog} {action.option_strings[0]} has no help"


def test_sandbox_and_export_options():
    sandbox = _parsers()["civicrm-gateway sandbox"].format_help()
    assert "--host HOST          address to bind (default 127.0.0.1)" in sandbox
    assert "--reset" in sandbox
    export = _parsers()["civicrm-gateway export"].format_help()
    assert "--url URL" in export and "--token-file TOKEN_FILE" in export
