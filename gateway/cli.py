"""``civicrm-gateway``: serve the gateway, check the backend, run the sandbox CiviCRM."""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
from collections.abc import Sequence

from .settings import SettingsError, env_name, load_settings


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


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    # Workers are separate processes that build their own app from the environment.
    for name in ("host", "port", "workers", "backend"):
        value = getattr(args, name)
        if value is not None:
            os.environ[env_name(name)] = str(value)
    settings = load_settings()
    uvicorn.run(
        "gateway.app:app_factory",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_config=None,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=30,
        **_uvicorn_options(),  # type: ignore[arg-type]
    )
    return 0


async def _check() -> tuple[bool, str]:
    from .backends import make_backend
    from .errors import GatewayError

    settings = load_settings()
    backend = make_backend(settings)
    try:
        await backend.start()
        await backend.check()
    except GatewayError as exc:
        return False, f"{backend.name} backend: {exc.problem.title}: {exc.detail}"
    finally:
        await backend.close()
    return True, f"{backend.name} backend: reachable, credentials accepted"


def cmd_check(args: argparse.Namespace) -> int:
    ok, message = asyncio.run(_check())
    print(("OK   " if ok else "FAIL ") + message)
    return 0 if ok else 1


def cmd_sandbox(args: argparse.Namespace) -> int:
    import uvicorn

    from .sandbox.engine import Sandbox
    from .sandbox.wire import WireConfig, create_wire_app

    api_key = args.api_key or os.environ.get("CIVI_SANDBOX_API_KEY") or secrets.token_hex(16)
    sandbox = Sandbox(args.db, demo=args.demo)
    config = WireConfig(api_keys={api_key: 2}, site_key=args.site_key)
    app = create_wire_app(sandbox, config)
    base = f"http://{args.host}:{args.port}"
    print(f"Sandbox CiviCRM at {base} (admin API key printed once below).\n"
          f"Point a gateway at it with:\n"
          f"  {env_name('backend')}=http {env_name('http_url')}={base} "
          f"{env_name('http_api_key')}={api_key}", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning",
                **_uvicorn_options())  # type: ignore[arg-type]
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    from .clients import hash_token, new_token

    token = new_token()
    print(f"token (give it to the client; it is not stored anywhere): {token}", file=sys.stderr)
    print(f"{args.name}:sha256:{hash_token(token)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="civicrm-gateway", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway (settings from CIVI_GATEWAY_* env)")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8000)")
    serve.add_argument("--workers", type=int, help="worker processes (default 1)")
    serve.add_argument("--backend", choices=["sandbox", "http", "cv", "pipe"])
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser("check", help="call the configured backend once; exit 0 if usable")
    check.set_defaults(func=cmd_check)

    sandbox = sub.add_parser("sandbox", help="run the embedded CiviCRM emulator over HTTP")
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--port", type=int, default=8080)
    sandbox.add_argument("--db", default=":memory:", help="SQLite file (default in memory)")
    sandbox.add_argument("--demo", type=int, default=200, help="demo contacts to create")
    sandbox.add_argument("--api-key", help="admin API key (default: random, printed)")
    sandbox.add_argument("--site-key", help="site key for X-Civi-Key guards")
    sandbox.set_defaults(func=cmd_sandbox)
    token = sub.add_parser("token", help="client tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    create = token_sub.add_parser(
        "create", help="make a token; prints the token (stderr) and its config line (stdout)")
    create.add_argument("name", help="the client's name (letters, digits, _.@-)")
    create.set_defaults(func=cmd_token_create)

    from .openapi.command import add_command as add_openapi_command

    add_openapi_command(sub)
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
