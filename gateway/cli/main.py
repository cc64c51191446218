"""civicrm-gateway: serve the gateway, check the backend, run the sandbox CiviCRM, export."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

from gateway import __version__
from gateway.cli.startup import hold_sandbox, identity_warnings, port_problem, sandbox_unused
from gateway.settings import Settings, SettingsError, env_name, load_settings


def _uvicorn_options() -> dict[str, object]:
    """The fastest event loop and HTTP parser that are installed."""
    options: dict[str, object] = {}
    try:
        import uvloop  # noqa: F401

        options["loop"] = "uvloop"
    except ImportError:
        pass
    try:
        import httptools  # noqa: F401

        options["http"] = "httptools"
    except ImportError:
        pass
    return options


def _metrics_dir(settings: Settings) -> tuple[str | None, bool]:
    """With several workers: an empty folder for prometheus_client's multiprocess files, named
    in ``PROMETHEUS_MULTIPROC_DIR`` for the workers to inherit. An operator's own folder is
    emptied (samples of an earlier run would add up with this one's); otherwise a temporary
    one. Returns the folder and whether ``serve`` made it (and removes it at the end)."""
    from gateway.telemetry.metrics import MULTIPROC_ENV

    if settings.workers == 1 or not settings.metrics_enabled:
        os.environ.pop(MULTIPROC_ENV, None)  # one process: its own registry, nothing on disk
        return None, False
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        folder = Path(given)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):
            stale.unlink()
        return given, False
    made = tempfile.mkdtemp(prefix="civicrm-gateway-metrics-")
    os.environ[MULTIPROC_ENV] = made
    return made, True


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.services import check_workers

    # Workers are separate processes that build their own app from the environment.
    for name in ("host", "port", "workers", "backend"):
        value = getattr(args, name)
        if value is not None:
            os.environ[env_name(name)] = str(value)
    settings = load_settings()
    check_workers(settings)
    problem = port_problem(settings.host, settings.port)
    if problem is not None:
        print(f"civicrm-gateway serve: {problem}", file=sys.stderr)
        return 1
    _announce(settings)
    for warning in identity_warnings(settings):
        logging.getLogger("gateway").warning("%s", warning)
    # Held while serving, so that `sandbox --reset` cannot delete the database under it.
    in_use = hold_sandbox(settings.sandbox_db_path) if settings.backend == "sandbox" else None
    folder, made = _metrics_dir(settings)
    options: dict[str, Any] = {
        "factory": True,
        "host": settings.host,
        "port": settings.port,
        "workers": settings.workers,
        "log_config": None,
        "server_header": False,
        "proxy_headers": False,
        # On SIGTERM: stop accepting, let calls in flight finish (up to this many seconds).
        # uvicorn takes a float here too (asyncio's wait_for), though annotated int.
        "timeout_graceful_shutdown": settings.shutdown_grace,
        **_uvicorn_options(),
    }
    try:
        if _warms_early(settings):
            _serve_warming(settings, options)
        else:
            uvicorn.run("gateway.web.app:app_factory", **options)
    finally:
        if made and folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        if in_use is not None:
            in_use.close()
    return 0


def _warms_early(settings: Settings) -> bool:
    """Whether ``serve`` starts the metadata warm-up's workers before importing the app: one
    process on cv or pipe, building the documents at start-up from CiviCRM."""
    return (
        settings.workers == 1
        and settings.backend in ("cv", "pipe")
        and settings.openapi_spec_file is None
        and settings.openapi_prebuild is not False
    )


def _serve_warming(settings: Settings, options: dict[str, Any]) -> None:
    """uvicorn's run of one process, with the metadata warm-up's workers started first: CiviCRM
    boots in them while the app is imported (a second of Python, on one core), so the warm-up
    finds them ready at start-up instead of starting them then, beside the clients' own."""
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE

    from gateway.backends.warmup import close_early, start_early
    from gateway.services import cv_config

    config = uvicorn.Config("gateway.web.app:app_factory", **options)
    loop_factory = getattr(config, "get_loop_factory", None)  # uvicorn >= 0.36
    if loop_factory is None:
        uvicorn.run("gateway.web.app:app_factory", **options)
        return
    server = uvicorn.Server(config)

    async def serve() -> None:
        await start_early(cv_config(settings))
        try:
            await server.serve()  # imports the app, then serves until told to stop
        finally:
            await close_early()

    with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(serve())
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def _announce(settings: Settings) -> None:
    """The first thing a newcomer needs: where the gateway listens and where its docs are."""
    from gateway.telemetry.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    base = f"http://{host}:{settings.port}"
    logging.getLogger("gateway").info(
        "civicrm-gateway on %s (backend %s): API docs at %s/docs, index at %s/",
        base,
        settings.backend,
        base,
        base,
    )


async def _check() -> tuple[bool, str]:
    from gateway.core.errors import GatewayError
    from gateway.services import make_backend

    settings = load_settings()
    backend = make_backend(settings)
    try:
        await backend.start()
        await backend.check()
        # The embedded sandbox is a playground: its admin user reading keys is no deployment.
        exposed = settings.backend != "sandbox" and await _reads_api_keys(backend)
    except GatewayError as exc:
        return False, f"{backend.name} backend: {exc.problem.title}: {exc.detail}"
    finally:
        await backend.close()
    message = f"{backend.name} backend: reachable, credentials accepted"
    if exposed:
        message += (
            "\nWARN the gateway's CiviCRM user can read other contacts' API keys (it is "
            "an administrator). Run the gateway as a user without 'administer CiviCRM' "
            "(docs/clients.md, least privilege): then no policy mistake can leak a key."
        )
    return True, message


async def _reads_api_keys(backend: Any) -> bool:
    """Whether the gateway's own CiviCRM user is shown contacts' ``api_key`` (CiviCRM drops
    the field for users without administrator rights)."""
    from gateway.core.call import parse
    from gateway.core.errors import GatewayError

    try:
        rows = await backend.call(
            parse(
                4,
                "Contact",
                "get",
                {"select": ["id", "api_key"], "where": [["api_key", "IS NOT NULL"]], "limit": 25},
            )
        )
    except GatewayError:
        return False  # this user may not even filter on it
    return any(isinstance(r, dict) and r.get("api_key") for r in rows)


def cmd_check(args: argparse.Namespace) -> int:
    ok, message = asyncio.run(_check())
    print(("OK   " if ok else "FAIL ") + message)
    for warning in identity_warnings(load_settings()):
        print(f"WARN {warning}")
    return 0 if ok else 1


def cmd_sandbox(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.sandbox.database import open_sandbox, reset_sandbox
    from gateway.sandbox.schema import emulated_entities
    from gateway.sandbox.wire import WireConfig, create_wire_app

    settings = load_settings()
    db = args.db or settings.sandbox_db_path
    demo = settings.sandbox_demo if args.demo is None else args.demo
    if args.reset:
        with sandbox_unused(db):
            path = reset_sandbox(db, demo)
        print(f"sandbox database reset: {path} ({_plural(demo, 'demo contact')})", file=sys.stderr)
        return 0
    api_key = args.api_key or os.environ.get("CIVI_SANDBOX_API_KEY") or secrets.token_hex(16)
    problem = port_problem(args.host, args.port)
    if problem is not None:
        print(f"civicrm-gateway sandbox: {problem}", file=sys.stderr)
        return 1
    in_use = hold_sandbox(db)  # released when the process ends
    sandbox = open_sandbox(db, demo)
    config = WireConfig(api_keys={api_key: 2}, site_key=args.site_key)
    app = create_wire_app(sandbox, config)
    tls = {"ssl_certfile": args.tls_cert, "ssl_keyfile": args.tls_key} if args.tls_cert else {}
    base = f"{'https' if tls else 'http'}://{args.host}:{args.port}"
    print(
        f"Sandbox CiviCRM at {base} emulating {', '.join(emulated_entities())} "
        "(admin API key printed once below).\n"
        f"Point a gateway at it with:\n"
        f"  {env_name('backend')}=http {env_name('http_url')}={base} "
        f"{env_name('http_api_key')}={api_key}",
        file=sys.stderr,
        flush=True,
    )
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning", **tls, **_uvicorn_options())  # type: ignore[arg-type]
    finally:
        if in_use is not None:
            in_use.close()
    return 0


class _Progress:
    """One self-rewriting stderr line: rows, rate and (when CiviCRM told the total) a bar."""

    def __init__(self, total: int | None, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled
        self.rows = 0
        self.started = time.monotonic()
        self._shown = 0.0

    def add(self, rows: int) -> None:
        self.rows += rows
        now = time.monotonic()
        if self.enabled and now - self._shown >= 0.2:
            self._shown = now
            self.show()

    def show(self, end: str = "") -> None:
        if not self.enabled:
            return
        rate = self.rows / max(time.monotonic() - self.started, 1e-6)
        if self.total:
            done = min(1.0, self.rows / self.total)
            bar = "#" * int(done * 30)
            line = f"[{bar:<30}] {self.rows}/{self.total} rows {done:4.0%} {rate:,.0f} rows/s"
        else:
            line = f"{_plural(self.rows, 'row')} {rate:,.0f} rows/s"
        print(f"\r{line}", end=end, file=sys.stderr, flush=True)


async def _export(args: argparse.Namespace, out: BinaryIO) -> int:
    import orjson

    from gateway.core.errors import GatewayError
    from gateway.core.params import check_names, parse_body

    settings = load_settings()
    try:
        check_names(args.entity, "get")
        params = parse_body((args.params or "{}").encode(), max_depth=settings.max_json_depth)
        if args.where:
            params["where"] = [*(params.get("where") or []), *orjson.loads(args.where)]
    except (GatewayError, orjson.JSONDecodeError) as exc:
        print(f"civicrm-gateway export: {getattr(exc, 'detail', exc)}", file=sys.stderr)
        return 2
    if args.select:
        params["select"] = [f.strip() for f in args.select.split(",") if f.strip()]
    if args.limit:
        params["limit"] = args.limit
    fmt = args.format or ("csv" if args.output and args.output.endswith(".csv") else "ndjson")
    show = (not args.quiet and sys.stderr.isatty()) or args.progress
    progress = _Progress(None, bool(show))
    run = _export_remote if args.url else _export_local
    status = await run(args, settings, params, fmt, out, progress)
    if status:
        return status
    print(
        f"exported {_plural(progress.rows, 'row')}" + (f" to {args.output}" if args.output else ""),
        file=sys.stderr,
    )
    return 0


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


async def _export_remote(
    args: argparse.Namespace,
    settings: Settings,
    params: dict[str, Any],
    fmt: str,
    out: BinaryIO,
    progress: _Progress,
) -> int:
    import aiohttp

    from gateway.cli.export_remote import RemoteExportError, export_via_gateway

    token = args.token or (settings.token.get_secret_value() if settings.token else None)

    def set_total(total: int | None) -> None:
        progress.total = total

    try:
        await export_via_gateway(
            args.url,
            token,
            args.entity,
            params,
            fmt,
            out,
            on_rows=progress.add,
            want_total=progress.enabled,
            on_total=set_total,
        )
        progress.show(end="\n")
    except RemoteExportError as exc:
        print(f"\ncivicrm-gateway export: {exc}", file=sys.stderr)
        return 1
    except (aiohttp.ClientError, TimeoutError) as exc:
        print(
            f"\ncivicrm-gateway export: cannot reach {args.url}: {exc or type(exc).__name__}", file=sys.stderr
        )
        return 1
    return 0


async def _export_local(
    args: argparse.Namespace,
    settings: Settings,
    params: dict[str, Any],
    fmt: str,
    out: BinaryIO,
    progress: _Progress,
) -> int:
    from gateway.core.errors import GatewayError
    from gateway.flow import export
    from gateway.flow.prepare import OPERATOR
    from gateway.services import build_services

    flow = build_services(settings).flow
    backend = flow.backend
    show = progress.enabled
    try:
        await backend.start()
        # The operator's own export: every field but credentials, prepared by the same flow
        # as a client's call (not rate limited: pages go straight to the backend).
        call = await flow.prepare(OPERATOR, 4, args.entity, "get", params)
        if show:
            progress.total = await export.count(backend, call)
        async for chunk in export.stream(
            backend, call, fmt, page_size=args.page_size or settings.export_page_size, on_rows=progress.add
        ):
            out.write(chunk)  # a local file: short blocking writes are fine in a CLI
        progress.show(end="\n")
    except GatewayError as exc:
        print(f"\ncivicrm-gateway export: {exc.problem.title}: {exc.detail}", file=sys.stderr)
        return 1
    finally:
        await backend.close()
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    args.token = None
    if args.token_file:
        try:
            with open(args.token_file, encoding="utf-8") as file:
                args.token = file.read().strip()
        except OSError as exc:
            print(f"civicrm-gateway export: --token-file: {exc.strerror}", file=sys.stderr)
            return 2
    if not args.output:
        return asyncio.run(_export(args, sys.stdout.buffer))
    with open(args.output, "wb") as out:
        return asyncio.run(_export(args, out))


def cmd_mcp(args: argparse.Namespace) -> int:
    from gateway.cli.mcp_bridge import cmd_mcp as run

    return run(args.url, args.token_file)


def cmd_token_create(args: argparse.Namespace) -> int:
    from gateway.flow.clients import hash_token, new_token

    token = new_token()
    print(f"token (give it to the client; it is not stored anywhere): {token}", file=sys.stderr)
    print(f"{args.name}:sha256:{hash_token(token)}")
    return 0


class _Parser(argparse.ArgumentParser):
    """Descriptions come from module docstrings: show their ``literals`` as plain text."""

    def format_help(self) -> str:
        return super().format_help().replace("``", "")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="civicrm-gateway", description=__doc__)
    parser.add_argument("--version", action="version", version=f"civicrm-gateway {__version__}")
    # Every subcommand's parser (the openapi module's too) gets the same help formatting.
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = sub.add_parser("serve", help="run the gateway (settings from CIVI_GATEWAY_* env)")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8000)")
    serve.add_argument("--workers", type=int, help="worker processes (default 1)")
    serve.add_argument(
        "--backend",
        choices=["sandbox", "http", "cv", "pipe"],
        help="where calls go (default sandbox, the embedded emulator)",
    )
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser("check", help="call the configured backend once; exit 0 if usable")
    check.set_defaults(func=cmd_check)

    sandbox = sub.add_parser("sandbox", help="run the embedded CiviCRM emulator over HTTP")
    sandbox.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    sandbox.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    sandbox.add_argument(
        "--db",
        help="SQLite file, or :memory: (default: the gateway's, "
        f"{env_name('sandbox_db')} or sandbox.sqlite in "
        f"{env_name('state_dir')}, .civicrm-gateway)",
    )
    sandbox.add_argument(
        "--demo",
        type=int,
        help=f"demo contacts in a new database (default {env_name('sandbox_demo')} or 200)",
    )
    sandbox.add_argument(
        "--reset",
        action="store_true",
        help="delete the sandbox database, create it afresh and exit (refused while a gateway "
        "or sandbox server uses it: stop them first)",
    )
    sandbox.add_argument("--api-key", help="admin API key (default: random, printed)")
    sandbox.add_argument("--site-key", help="site key for X-Civi-Key guards")
    sandbox.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    sandbox.add_argument("--tls-key", help="... and this private key (PEM)")
    sandbox.set_defaults(func=cmd_sandbox)
    exp = sub.add_parser(
        "export",
        help="stream an APIv4 get to a file (NDJSON or CSV), page by "
        "page, through the configured backend (the same "
        "settings and data as serve) or a running gateway",
    )
    exp.add_argument("entity", help="e.g. Contact")
    exp.add_argument("-o", "--output", help="file to write (default stdout)")
    exp.add_argument(
        "--format", choices=["ndjson", "csv"], help="default: csv for a .csv output file, else ndjson"
    )
    exp.add_argument("--params", help="APIv4 params as a JSON object")
    exp.add_argument("--where", help='extra where clauses, JSON, e.g. \'[["is_deleted","=",false]]\'')
    exp.add_argument("--select", help="fields, comma-separated")
    exp.add_argument("--limit", type=int, help="at most this many rows")
    exp.add_argument(
        "--page-size",
        type=int,
        help=f"rows per CiviCRM call (default {env_name('export_page_size')} or 1000)",
    )
    exp.add_argument("--progress", action="store_true", help="show progress even when not a tty")
    exp.add_argument("--quiet", action="store_true", help="no progress line")
    exp.add_argument(
        "--url",
        help="export through the gateway running at this URL (e.g. "
        "http://127.0.0.1:8000) instead of calling the backend",
    )
    exp.add_argument(
        "--token-file",
        help=f"with --url: a file holding the client token (default {env_name('token')}, if set)",
    )
    exp.set_defaults(func=cmd_export)

    token = sub.add_parser("token", help="client tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    create = token_sub.add_parser(
        "create", help="make a token; prints the token (stderr) and its config line (stdout)"
    )
    create.add_argument("name", help="the client's name (letters, digits, _.@-)")
    create.set_defaults(func=cmd_token_create)

    bridge = sub.add_parser(
        "mcp",
        help="a stdio MCP server for assistants that start only local servers: forwards to a "
        "gateway's /mcp (docs/mcp.md)",
    )
    bridge.add_argument("--url", required=True, help="the gateway, e.g. https://gateway.example.org")
    bridge.add_argument(
        "--token-file",
        help="a file holding the client token, private to you (chmod 600); without it no token "
        "is sent (a gateway without client tokens, on loopback)",
    )
    bridge.set_defaults(func=cmd_mcp)

    from gateway.cli.openapi_command import add_command as add_openapi_command

    add_openapi_command(sub)
    from gateway.cli.audit_command import add_command as add_audit_command

    add_audit_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except SettingsError as exc:
        print(f"civicrm-gateway: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
