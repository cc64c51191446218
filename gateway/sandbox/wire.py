"""CiviCRM's HTTP protocol in front of a Sandbox: the APIv4 and APIv3 REST end-points with
AuthX credentials, the CSRF guard, GET-vs-POST rules and the exact status codes and bodies
of a real CiviCRM 5.77 (see tests/fixtures/samples)."""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import string
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.sandbox.engine import Sandbox
from gateway.sandbox.errors import CiviError
from gateway.sandbox.phpjson import dumps_bytes
from gateway.sandbox.query import PhpFatal

JSON_TYPE = "application/json"
XHR_ALERT4 = "SECURITY ALERT: Ajax requests can only be issued by javascript clients, eg. CRM.api4()."
XHR_ALERT3 = "SECURITY ALERT: Ajax requests can only be issued by javascript clients, eg. CRM.api3()."
GET_WRITE = "SECURITY: All requests that modify the database must be http POST, not GET."
GUARD = "Login not permitted. Must satisfy guard (site_key, perm)."
PHP_FATAL: dict[str, Any] = {}  # marker: the call died in a PHP error (empty HTML page)
GENERIC = "Sorry an error occurred and your request was not completed. (Error ID: {})"


@dataclass
class WireConfig:
    """Who may log in and how the site behaves; tests may mutate it while the app runs."""

    api_keys: dict[str, int] = field(default_factory=dict)  # api key -> contact id
    site_key: str | None = None
    users: dict[str, tuple[str, int]] = field(default_factory=dict)  # name -> (pass, cid)
    maintenance: bool = False
    debug_output: bool = True

    @classmethod
    def for_sandbox(cls, sandbox: Sandbox, **overrides: Any) -> WireConfig:
        """Credentials of the sandbox's users (admin and staff) and its site key."""
        users = sandbox.users()
        cfg = cls(
            api_keys={u["api_key"]: u["contact_id"] for u in users if u["api_key"]},
            site_key=sandbox.site_key,
            users={u["username"]: (u["password"], u["contact_id"]) for u in users},
        )
        for key, value in overrides.items():
            setattr(cfg, key, value)
        return cfg


class AuthFailure(Exception):
    def __init__(self, message: str, legacy: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.legacy = legacy


@dataclass
class Login:
    contact_id: int | None = None
    csrf_ok: bool = False  # X-Civi-Auth, _authx and legacy key logins pass the CSRF gate


def json_response(body: Any, status: int = 200) -> Response:
    return Response(
        dumps_bytes(body), status_code=status, media_type=JSON_TYPE, headers={"Content-Type": JSON_TYPE}
    )


def text_401(message: str) -> Response:
    return Response(
        f"HTTP 401 {message}", status_code=401, headers={"Content-Type": "text/plain;charset=UTF-8"}
    )


def php_fatal() -> Response:
    """What PHP answers when json_decode fails deep inside: 500 and an empty HTML page."""
    return Response(b"", status_code=500, headers={"Content-Type": "text/html; charset=UTF-8"})


def error_id() -> str:
    alphabet = string.ascii_letters + string.digits
    return "-".join("".join(secrets.choice(alphabet) for _ in range(4)) for _ in range(3))


async def read_fields(request: Request) -> dict[str, str]:
    """$_REQUEST: query string plus an urlencoded body (body wins)."""
    fields = dict(parse_qsl(request.url.query, keep_blank_values=True))
    if request.method == "POST":
        body = (await request.body()).decode("utf-8", "replace")
        ctype = request.headers.get("content-type", "")
        if not ctype or "urlencoded" in ctype or "text/plain" in ctype:
            fields.update(parse_qsl(body, keep_blank_values=True))
    return fields


class WireApp:
    def __init__(self, sandbox: Sandbox, config: WireConfig) -> None:
        self.sandbox = sandbox
        self.config = config

    # ---- authentication ---------------------------------------------------------------
    async def authenticate(self, request: Request, fields: dict[str, str]) -> Login:
        """AuthX: X-Civi-Auth / Authorization / _authx, then legacy key+api_key."""
        sources = [
            ("x-civi-auth", request.headers.get("x-civi-auth"), True),
            ("authorization", request.headers.get("authorization"), False),
            ("_authx", fields.get("_authx"), True),
        ]
        for _, cred, csrf_ok in sources:
            if cred is None:
                continue
            cid, flow = self._credential(cred)
            await self._guard(request, cid, flow)
            return Login(cid, csrf_ok)
        if "api_key" in fields or "key" in fields:
            legacy_cid = self.config.api_keys.get(fields.get("api_key", ""))
            site_ok = self.config.site_key is not None and fields.get("key") == self.config.site_key
            if legacy_cid is None or not site_ok:
                raise AuthFailure("FATAL: Invalid credential", legacy=True)
            return Login(legacy_cid, True)
        return Login(None, False)

    def _credential(self, cred: str) -> tuple[int, str]:
        scheme, _, token = cred.strip().partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token:
            cid = self.config.api_keys.get(token)
            if cid is not None:
                return cid, "api_key"
        elif scheme.lower() == "basic" and token:
            try:
                user, _, password = base64.b64decode(token).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise AuthFailure("Invalid credential") from None
            known = self.config.users.get(user)
            if known and secrets.compare_digest(known[0], password):
                return known[1], "pass"
        raise AuthFailure("Invalid credential")

    async def _guard(self, request: Request, cid: int, flow: str) -> None:
        perm = "authenticate with api key" if flow == "api_key" else "authenticate with password"
        perms = await anyio.to_thread.run_sync(self.sandbox.permissions, cid)
        site_key = request.headers.get("x-civi-key")
        if perm in perms:
            return
        if (
            self.config.site_key is not None
            and site_key is not None
            and secrets.compare_digest(site_key, self.config.site_key)
        ):
            return
        raise AuthFailure(GUARD)

    async def _debug_visible(self, cid: int | None) -> bool:
        if not self.config.debug_output or cid is None:
            return False
        perms = await anyio.to_thread.run_sync(self.sandbox.permissions, cid)
        return "view debug output" in perms

    # ---- APIv4 ------------------------------------------------------------------------
    async def _preamble(self, request: Request, v3: bool = False) -> tuple[dict[str, str], Login] | Response:
        if self.config.maintenance:
            return json_response(
                {"status_code": 503, "status_message": "Temporarily unavailable for maintenance."}, 503
            )
        fields = await read_fields(request)
        try:
            login = await self.authenticate(request, fields)
        except AuthFailure as exc:
            if exc.legacy:
                return json_response({"error_message": exc.message, "is_error": 1})
            return text_401(exc.message)
        xhr = request.headers.get("x-requested-with") == "XMLHttpRequest"
        if not (xhr or login.csrf_ok or request.method == "OPTIONS"):
            if v3:
                return json_response({"is_error": 1, "error_message": XHR_ALERT3})
            return json_response({"error_code": 400, "error_message": XHR_ALERT4}, 400)
        return fields, login

    @staticmethod
    def _is_read(action: str) -> bool:
        return action.lower().startswith("get") or action == "autocomplete"

    async def _call4(
        self, entity: str, action: str, params: Any, index: Any, login: Login
    ) -> tuple[int, dict[str, Any]]:
        if isinstance(params, list):
            params = {str(i): v for i, v in enumerate(params)}
        elif not isinstance(params, dict):
            params = {}
        try:
            result = await anyio.to_thread.run_sync(
                lambda: self.sandbox.api4(
                    entity, action, params, check_permissions=True, contact_id=login.contact_id, index=index
                )
            )
            return 200, result
        except PhpFatal:
            return 500, PHP_FATAL
        except CiviError as exc:
            if await self._debug_visible(login.contact_id):
                body = {"error_code": exc.error_code, "error_message": exc.message, "status": exc.status}
            else:
                body = {"error_code": "1", "error_message": GENERIC.format(error_id()), "status": exc.status}
            return exc.status, body

    async def api4_single(self, request: Request) -> Response:
        pre = await self._preamble(request)
        if isinstance(pre, Response):
            return pre
        fields, login = pre
        entity = request.path_params["entity"]
        action = request.path_params["action"]
        if request.method == "GET" and not self._is_read(action):
            return json_response({"error_code": 405, "error_message": GET_WRITE}, 405)
        try:
            params = json.loads(fields["params"]) if fields.get("params") else {}
        except ValueError:
            return php_fatal()
        index: Any = fields.get("index") or None
        if isinstance(index, str) and index.isdigit():
            index = int(index)
        status, body = await self._call4(entity, action, params, index, login)
        if body is PHP_FATAL:
            return php_fatal()
        return json_response(body, status)

    async def api4_multi(self, request: Request) -> Response:
        pre = await self._preamble(request)
        if isinstance(pre, Response):
            return pre
        fields, login = pre
        try:
            calls = json.loads(fields.get("calls") or "{}")
        except ValueError:
            return php_fatal()
        if not isinstance(calls, dict):
            calls = {str(i): c for i, c in enumerate(calls)} if isinstance(calls, list) else {}
        answers: dict[str, Any] = {}
        statuses: list[int] = []
        for name, call in calls.items():
            if not isinstance(call, list) or len(call) < 2:
                continue
            entity, action = str(call[0]), str(call[1])
            if request.method == "GET" and not self._is_read(action):
                return json_response({"error_code": 405, "error_message": GET_WRITE}, 405)
            params = call[2] if len(call) > 2 else {}
            index = call[3] if len(call) > 3 else None
            status, body = await self._call4(entity, action, params, index, login)
            if body is PHP_FATAL:
                return php_fatal()  # a PHP error ends the whole request
            answers[name] = body
            statuses.append(status)
        if not statuses or 200 in statuses:
            status = 200
        else:
            status = statuses[0]
        return json_response(answers, status)

    # ---- APIv3 ------------------------------------------------------------------------
    async def api3(self, request: Request) -> Response:
        pre = await self._preamble(request, v3=True)
        if isinstance(pre, Response):
            return pre
        fields, login = pre
        entity = fields.get("entity", "")
        action = fields.get("action", "")
        if request.method == "GET" and not action.lower().startswith("get"):
            return json_response({"is_error": 1, "error_message": GET_WRITE})
        raw = fields.get("json")
        try:
            if raw and raw != "1":
                params = json.loads(raw)
            else:
                skip = {"entity", "action", "json", "key", "api_key", "_authx", "q"}
                params = {k: v for k, v in fields.items() if k not in skip}
        except ValueError:
            return php_fatal()
        if not isinstance(params, dict):
            params = {}
        result = await anyio.to_thread.run_sync(
            lambda: self.sandbox.api3(
                entity, action, params, check_permissions=True, contact_id=login.contact_id
            )
        )
        # APIv3 errors keep their messages for users without "view debug output" (5.77).
        return json_response(result)


def create_wire_app(sandbox: Sandbox, config: WireConfig) -> Starlette:
    """An ASGI app speaking CiviCRM's REST protocols on top of ``sandbox``."""
    app = WireApp(sandbox, config)
    methods = ["GET", "POST"]
    return Starlette(
        routes=[
            Route("/civicrm/ajax/api4/{entity}/{action}", app.api4_single, methods=methods),
            Route("/civicrm/ajax/api4", app.api4_multi, methods=methods),
            Route("/civicrm/ajax/rest", app.api3, methods=methods),
        ]
    )
