"""CiviCRM over HTTP: APIv4 at ``civicrm/ajax/api4/{Entity}/{action}``, APIv3 at ``civicrm/ajax/rest``.

One pooled client per backend (``httpclient.PooledClient``) keeps connections alive between
calls. Params always go in the POST body (never the URL, where proxies and access logs would
keep them), JSON re-encoded by the gateway so CiviCRM never sees malformed JSON.
"""

from __future__ import annotations

import base64
import email.utils
import logging
import ssl
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode

import orjson

from gateway.backends.base import Backend, BatchResult, TransientError
from gateway.backends.config import HttpConfig
from gateway.backends.httpclient import Broken, PooledClient, Reply, TimedOut, Transport, Unreachable
from gateway.core.call import Call
from gateway.core.errors import UNCLEAR, GatewayError, Slug
from gateway.core.identity import Identity
from gateway.core.results import Records, invalid_response, v3_records, v4_error, v4_records

log = logging.getLogger("gateway.backend.http")

# Statuses a proxy or an overloaded CiviCRM answers for a moment: worth a retry for safe calls.
_TRANSIENT: dict[int, Slug] = {
    429: "upstream-unavailable",
    502: "upstream-invalid-response",
    503: "upstream-unavailable",
    504: "upstream-timeout",
}


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds from now (it may be a number or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _dumps(params: dict[str, Any]) -> str:
    return orjson.dumps(params).decode()


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


class HttpBackend(Backend):
    name = "http"

    def __init__(self, config: HttpConfig, *, wrap: Callable[[Transport], Transport] | None = None) -> None:
        """``wrap``: applied to the pooled client once made (tests inject faults this way)."""
        if not config.http_url:
            raise ValueError("http_url is required")
        self.config = config
        self.base = config.http_url
        self._client: Transport | None = None
        self._wrap = wrap
        self._headers, self._legacy_fields = self._credentials(config)
        self._in_flight = 0

    # --- credentials -------------------------------------------------------------------------
    @staticmethod
    def _credentials(s: HttpConfig) -> tuple[dict[str, str], dict[str, str]]:
        headers = {
            "X-Requested-With": "XMLHttpRequest",
            "Accept": "application/json",
            "Content-Type": "application/x-www-form-urlencoded",
        }
        legacy: dict[str, str] = {}
        key = s.http_api_key.get_secret_value() if s.http_api_key else ""
        if s.http_auth == "x-civi-auth":
            headers["X-Civi-Auth"] = f"Bearer {key}"
        elif s.http_auth == "bearer":
            headers["Authorization"] = f"Bearer {key}"
        elif s.http_auth == "basic":
            password = s.http_password.get_secret_value() if s.http_password else ""
            headers["Authorization"] = _basic(s.http_username or "", password)
        else:  # legacy key + api_key form fields (extern/rest.php style; APIv3 and APIv4)
            legacy = {"api_key": key}
        if s.http_site_key is not None:
            site_key = s.http_site_key.get_secret_value()
            headers["X-Civi-Key"] = site_key
            if s.http_auth == "legacy":
                legacy["key"] = site_key
        if s.http_htaccess_user and "Authorization" not in headers:
            password = s.http_htaccess_password.get_secret_value() if s.http_htaccess_password else ""
            headers["Authorization"] = _basic(s.http_htaccess_user, password)
        return headers, legacy

    # --- lifecycle ---------------------------------------------------------------------------
    def _tls(self) -> ssl.SSLContext | bool:
        """The system's trust store, or the operator's CA bundle; ``False`` skips checking."""
        if self.config.http_ca_bundle is not None:
            return ssl.create_default_context(cafile=str(self.config.http_ca_bundle))
        return ssl.create_default_context() if self.config.http_verify_ssl else False

    async def start(self) -> None:
        if self._client is not None:
            return
        s = self.config
        assert s.http_url is not None  # required by the settings' validation for this backend
        client = PooledClient(
            s.http_url,
            headers=self._headers,
            timeout=s.http_timeout,
            connect_timeout=min(10.0, s.http_timeout),
            max_connections=s.http_max_connections,
            tls=self._tls(),
        )
        self._client = self._wrap(client) if self._wrap else client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def stats(self) -> dict[str, float]:
        """Requests in flight and the connection pool's open and idle connections."""
        stats = {
            "in_flight": float(self._in_flight),
            "max_connections": float(self.config.http_max_connections),
        }
        if self._client is not None:
            stats.update(self._client.stats())
        return stats

    # --- calls -------------------------------------------------------------------------------
    def _auth(self, identity: Identity | None) -> tuple[dict[str, str], dict[str, str]]:
        """Per-request headers and form fields: the gateway's own legacy ``key`` / ``api_key``
        fields (``http_auth = legacy``), replaced by the client's own CiviCRM user's key when
        ``identity`` has one. Every request (one call or a multi-call batch) goes through here:
        a request built without it would run as CiviCRM's anonymous user."""
        fields = dict(self._legacy_fields)
        if identity is None or not identity.api_key:
            return {}, fields
        key = identity.api_key
        style = self.config.http_auth
        if style == "bearer":
            return {"Authorization": f"Bearer {key}"}, fields
        if style == "legacy":
            return {}, {**fields, "api_key": key}
        return {"X-Civi-Auth": f"Bearer {key}"}, fields

    async def call(self, call: Call, *, identity: Identity | None = None) -> Records:
        headers, fields = self._auth(identity)
        version, action = call.version, call.action
        if version == 4:
            path = f"civicrm/ajax/api4/{call.entity}/{action}"
            # AuthX reads legacy key + api_key on civicrm/ajax/api4 too (LegacyRestAuthenticator).
            data = {"params": _dumps(call.to_params()), **fields}
        else:
            path = self.config.http_v3_path
            data = {"entity": call.entity, "action": action, "json": _dumps(call.to_params()), **fields}
        response = await self._post(path, data, headers)
        body = self._json(response)
        status = response.status
        if version == 4:
            if status >= 400 and (not isinstance(body, dict) or "values" in body):
                raise invalid_response(f"CiviCRM answered HTTP {status}.")
            return v4_records(body, status=status)
        if status >= 400 and not (isinstance(body, dict) and body.get("is_error")):
            raise invalid_response(f"CiviCRM answered HTTP {status}.")
        return v3_records(action, body)

    async def _post(self, path: str, data: dict[str, str], headers: dict[str, str] | None = None) -> Reply:
        if self._client is None:
            await self.start()
        assert self._client is not None
        self._in_flight += 1
        started = time.perf_counter()
        try:
            response = await self._client.post(path, urlencode(data).encode(), headers)
        except Unreachable as exc:
            # Nothing was sent: safe to try again, even for a write.
            raise TransientError(
                "upstream-unavailable", f"The gateway cannot connect to CiviCRM ({exc}).", reached=False
            ) from None
        except TimedOut:
            raise GatewayError(
                "upstream-timeout", f"CiviCRM did not answer within {self.config.http_timeout:g} s."
            ) from None
        except Broken as exc:
            # Reset or cut mid-answer: the request may have reached CiviCRM.
            raise TransientError(
                "upstream-invalid-response", f"The connection to CiviCRM failed: {exc}.", reached=True
            ) from None
        finally:
            self._in_flight -= 1
        # Path and status only: the body carries the params and the headers the credentials.
        log.debug(
            "CiviCRM POST /%s answered %d in %.1f ms",
            path,
            response.status,
            (time.perf_counter() - started) * 1000,
        )
        if response.status in _TRANSIENT:
            raise self._transient(response)
        if response.status == 401:
            log.error(
                "CiviCRM rejected the gateway's credentials (HTTP 401 from %s): %s",
                self.base,
                response.text[:200],
            )
            raise GatewayError(
                "gateway-misconfigured",
                "CiviCRM rejected the gateway's credentials; the gateway's operator must check "
                "its CiviCRM API key, site key and auth settings.",
                civicrm={"error_code": 401, "error_message": response.text[:200].strip()},
            )
        return response

    @staticmethod
    def _transient(response: Reply) -> TransientError:
        status = response.status
        slug = _TRANSIENT[status]
        detail = f"CiviCRM answered HTTP {status}."
        if status == 503 and b"maintenance" in response.content[:500]:
            slug, detail = "upstream-maintenance", "CiviCRM is in maintenance mode."
        elif status == 429:
            detail = "CiviCRM (or a proxy in front of it) is rate limiting the gateway (HTTP 429)."
        wait = retry_after_seconds(response.headers.get("retry-after"))
        headers = {"Retry-After": str(max(1, round(wait)))} if wait is not None else None
        return TransientError(slug, detail, reached=True, retry_after=wait, headers=headers)

    async def batch(
        self,
        calls: Mapping[str, Call],
        *,
        identity: Identity | None = None,
        concurrency: int = 8,
    ) -> dict[str, BatchResult]:
        """APIv4 calls go in one request through CiviCRM's multi-call form
        (``civicrm/ajax/api4`` with ``calls=``); APIv3 has none, so it runs them concurrently."""
        if not calls or any(c.version != 4 for c in calls.values()):
            return await super().batch(calls, identity=identity, concurrency=concurrency)
        headers, fields = self._auth(identity)
        payload = {name: [c.entity, c.action, c.to_params()] for name, c in calls.items()}
        response = await self._post(
            "civicrm/ajax/api4", {"calls": orjson.dumps(payload).decode(), **fields}, headers
        )
        body = self._json(response)
        if not isinstance(body, dict):
            raise invalid_response("CiviCRM's multi-call answer is not a JSON object.")
        if "error_message" in body and not set(calls) & set(body):
            raise v4_error(body, response.status)  # the request failed as a whole
        results: dict[str, BatchResult] = {}
        for name in calls:
            member = body.get(name)
            try:
                if member is None:
                    raise invalid_response(f"CiviCRM's multi-call answer has no {name!r}.")
                results[name] = v4_records(member)
            except GatewayError as exc:
                results[name] = exc
        return results

    @staticmethod
    def _json(response: Reply) -> Any:
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:
            if response.status == 503:
                raise GatewayError(
                    "upstream-unavailable", "CiviCRM answered 503 Service Unavailable."
                ) from None
            if response.status == 405:
                raise GatewayError("method-not-allowed", "CiviCRM refused the HTTP method.") from None
            if response.status == 500:
                # PHP died mid-call (a fatal error, an uncaught TypeError): CiviCRM failed, the
                # same failure cv reports as exit 255 and cv pipe as a JSON-RPC error.
                raise GatewayError(
                    "upstream-error",
                    "CiviCRM failed with a PHP error (HTTP 500 without an API answer); "
                    "CiviCRM's own log has the cause.",
                    upstream=UNCLEAR,  # this input, or CiviCRM down: the breaker probes
                ) from None
            kind = response.headers.get("content-type", "no content type").split(";")[0]
            raise invalid_response(
                f"CiviCRM answered HTTP {response.status} with {kind}, not JSON."
            ) from None
