"""Keeps web pages out: requests a browser sends on a page's behalf are refused.

A gateway without client tokens trusts loopback callers, and a browser on the same machine is
one: any page it shows could POST a form or a ``text/plain`` fetch to ``127.0.0.1`` (a CORS
"simple" request needs no preflight), or reach it by a name it controls (DNS rebinding). So,
when tokenless (or ``CIVI_GATEWAY_BROWSER_CHECKS=true``):

- the ``Host`` must be one the gateway serves (loopback names, or ``CIVI_GATEWAY_ALLOWED_HOSTS``);
- an ``Origin`` (or ``Sec-Fetch-Site: cross-site|same-site``) not in the CORS list is refused,
  unless it is the gateway's own origin: the ``Origin`` names the very host and port the
  request was sent to (already one the gateway serves), so the page came from the gateway
  itself (its ``/docs``, whose Try-it-out must work). A page on another port or name of the
  same machine is another origin, and still refused;
- a body must be sent as JSON: a form or text body is exactly what a page can send unasked.

``CIVI_GATEWAY_ALLOWED_HOSTS`` also applies with tokens when set.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.core.errors import GatewayError
from gateway.settings import Settings

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})

Handler = Callable[[Request, Exception], Awaitable[Response]]


def _host_name(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:8000
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _same_origin(origin: str, host: str, fetch_site: str) -> bool:
    """Whether a browser says the request comes from a page of the gateway itself: the
    ``Origin``'s host and port are the ``Host`` it sent, and ``Sec-Fetch-Site`` (when sent,
    as every current browser does) agrees."""
    scheme, sep, netloc = origin.strip().lower().partition("://")
    if not sep or scheme not in ("http", "https") or not netloc or netloc != host.strip().lower():
        return False
    return fetch_site in ("", "same-origin")


def _is_json(content_type: str) -> bool:
    media = content_type.split(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class BrowserGuard:
    def __init__(self, app: ASGIApp, *, settings: Settings, tokenless: bool, on_error: Handler) -> None:
        self.app = app
        self.on_error = on_error
        self.checks = settings.browser_checks if settings.browser_checks is not None else tokenless
        hosts = {h.lower() for h in settings.allowed_hosts}
        self.hosts: frozenset[str] | None = (
            frozenset(hosts) if hosts else (LOOPBACK_HOSTS if self.checks else None)
        )
        self.origins = frozenset(o.rstrip("/") for o in settings.cors_origins)

    def _refusal(self, scope: Scope) -> GatewayError | None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if self.hosts is not None:
            host = _host_name(headers.get("host", ""))
            if host not in self.hosts:
                return GatewayError(
                    "cross-origin-denied", f"This gateway does not serve the host name {host[:80]!r}."
                )
        if not self.checks:
            return None
        origin = headers.get("origin")
        fetch_site = headers.get("sec-fetch-site", "")
        foreign = origin is not None and origin.rstrip("/") not in self.origins
        # Only where the Host was checked: a name a rebinding attacker controls is refused above.
        if foreign and self.hosts is not None:
            foreign = not _same_origin(origin or "", headers.get("host", ""), fetch_site)
        if foreign or (origin is None and fetch_site in ("cross-site", "same-site")):
            return GatewayError(
                "cross-origin-denied",
                "Requests from web pages of other origins are refused "
                "(allow an origin with CIVI_GATEWAY_CORS_ORIGINS).",
            )
        if scope["method"] not in ("GET", "HEAD", "OPTIONS"):
            has_body = headers.get("content-length", "0") not in ("", "0") or "transfer-encoding" in headers
            content_type = headers.get("content-type")
            if (has_body or content_type) and not _is_json(content_type or ""):
                return GatewayError(
                    "unsupported-media-type", "Send the params as JSON with 'Content-Type: application/json'."
                )
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (self.hosts is None and not self.checks):
            await self.app(scope, receive, send)
            return
        error = self._refusal(scope)
        if error is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        response = await self.on_error(request, error)
        await response(scope, receive, send)
