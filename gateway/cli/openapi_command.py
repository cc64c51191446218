"""``civicrm-gateway openapi``: write the OpenAPI document (and optionally a spec file).

The document is the one ``/openapi.json`` serves, built from the same settings: CiviCRM's
metadata comes from the configured backend, or from ``CIVI_GATEWAY_OPENAPI_SPEC_FILE``.
``--save-spec`` writes that metadata as a spec file, so that a gateway (or CI generating a
client) can later document CiviCRM without reaching it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from gateway.web.openapi import Docs


class CommandError(Exception):
    """A failure to report in one line, with exit status 1."""


async def _build(args: argparse.Namespace) -> dict[str, Any]:
    from gateway.settings import load_settings
    from gateway.web.app import create_app
    from gateway.web.openapi.metadata import save_spec

    settings = load_settings()
    app = create_app(settings)
    docs: Docs = app.state.docs
    if args.generic:
        return docs.generic()
    backend = app.state.services.backend
    reaching = settings.openapi_spec_file is None
    if reaching:
        await backend.start()
    try:
        metadata = await docs.source.get(wait=args.timeout)
    finally:
        if reaching:
            await backend.close()
    if metadata is None:
        raise CommandError(
            f"cannot get CiviCRM's metadata: {docs.source.error}. "
            "(--generic writes the document of the generic routes only.)"
        )
    if args.save_spec is not None:
        save_spec(metadata, args.save_spec)
        print(f"spec file written: {args.save_spec} ({len(metadata.entities)} entities)", file=sys.stderr)
    return docs.build(metadata)


def cmd_openapi(args: argparse.Namespace) -> int:
    try:
        doc = asyncio.run(_build(args))
    except CommandError as exc:
        print(f"civicrm-gateway openapi: {exc}", file=sys.stderr)
        return 1
    from gateway.settings import load_settings
    from gateway.web.openapi.samples import BASE_URL

    settings = load_settings()
    server = args.server_url or f"http://{settings.host}:{settings.port}"
    text = json.dumps(doc, indent=2, ensure_ascii=False).replace(BASE_URL, server) + "\n"
    if args.output in (None, "-"):
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"OpenAPI document written: {args.output} ({len(doc['paths'])} paths)", file=sys.stderr)
    return 0


def add_command(sub: Any) -> None:
    """Register ``openapi`` on the CLI's sub-parsers."""
    parser = sub.add_parser(
        "openapi",
        help="write the OpenAPI document (settings from CIVI_GATEWAY_* env)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-o", "--output", help="file to write (default: standard output)")
    parser.add_argument(
        "--save-spec",
        type=Path,
        metavar="FILE",
        help="also write CiviCRM's metadata as a spec file, for CIVI_GATEWAY_OPENAPI_SPEC_FILE",
    )
    parser.add_argument(
        "--generic", action="store_true", help="document the generic routes only (no call to CiviCRM)"
    )
    parser.add_argument(
        "--server-url",
        metavar="URL",
        help="the gateway's URL, for 'servers' and the code samples "
        "(default: http://HOST:PORT from the settings)",
    )
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for CiviCRM's metadata (default 300)"
    )
    parser.set_defaults(func=cmd_openapi)
