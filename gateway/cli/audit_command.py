"""``civicrm-gateway audit``: list and filter the audit trail kept in the state directory's
``audit.sqlite`` (the same settings as ``serve``: run it where the gateway runs, or with its
``CIVI_GATEWAY_STATE_DIR``). Newest first; a table, or ``--json`` for a JSON list."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from gateway.flow.audit.store import OUTCOMES, Query, parse_time, search, store_path


def add_command(sub: Any) -> None:
    parser = sub.add_parser(
        "audit", help="list the audit trail (writes and refused calls)", description=__doc__
    )
    parser.add_argument("--client", help="client name")
    parser.add_argument("--entity", help="e.g. Contact")
    parser.add_argument("--id", type=int, help="a record id the call affected")
    parser.add_argument("--action", help="e.g. create")
    parser.add_argument("--since", help="ISO 8601 date or time (UTC unless it says), inclusive")
    parser.add_argument("--until", help="ISO 8601 date or time, exclusive")
    parser.add_argument(
        "--outcome", choices=OUTCOMES, help="ok (status < 400), denied (401, 403), error (any other)"
    )
    parser.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    parser.add_argument("--json", action="store_true", help="a JSON list instead of a table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gateway.settings import load_settings

    settings = load_settings()
    try:
        query = Query(
            client=args.client,
            entity=args.entity,
            id=args.id,
            action=args.action,
            since=parse_time(args.since) if args.since else None,
            until=parse_time(args.until) if args.until else None,
            outcome=args.outcome,
            limit=max(1, args.limit),
        )
    except ValueError as exc:
        print(f"civicrm-gateway audit: {exc}", file=sys.stderr)
        return 2
    path = store_path(settings.state_dir)
    if not path.exists():
        print(
            f"civicrm-gateway audit: no audit trail at {path} (the gateway writes it there "
            'when CIVI_GATEWAY_AUDIT_SINKS includes "sqlite", the default)',
            file=sys.stderr,
        )
    records, _ = search(path, query)
    if args.json:
        sys.stdout.write(orjson.dumps(records, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(table(records))
    return 0


_COLUMNS = ("SEQ", "TIME", "CLIENT", "SOURCE", "CALL", "IDS", "STATUS", "FIELDS")


def _row(record: dict[str, Any]) -> tuple[str, ...]:
    call = f"v{record['version']} {record['entity'] or '-'}.{record['action']}"
    if record.get("batch"):
        call += f" [{record['batch']}]"
    status = str(record["status"]) + (f" {record['problem']}" if record.get("problem") else "")
    return (
        str(record["seq"]),
        record["time"],
        record["client"] or "-",
        record["source"] or "-",
        call,
        ",".join(map(str, record["ids"])) or "-",
        status,
        ",".join(record["fields"]) or "-",
    )


def table(records: list[dict[str, Any]]) -> str:
    """Aligned columns, one record a line (the last column is not padded)."""
    rows = [_COLUMNS, *(_row(r) for r in records)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS) - 1)]
    return "".join(
        "  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]) + "\n"
        for row in rows
    )
