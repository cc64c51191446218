"""The pooled HTTP/1.1 client the HTTP backend posts through, on aiohttp.

aiohttp rather than httpx on this hot path: a keep-alive POST on loopback costs about 0.3 ms with
aiohttp and 0.9 ms with httpx on the benchmark machine (docs/production.md), and the gateway's
whole budget for the latency it adds is 1 ms. Failures come out as three exceptions that say what
retrying needs to know: whether the request can have reached CiviCRM.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from gateway import __version__

USER_AGENT = f"civicrm-gateway/{__version__}"


class Unreachable(Exception):
    """Nothing was sent: refused, unresolvable, TLS handshake failed, or no free connection."""


class TimedOut(Exception):
    """The request went out and no full answer came back in time."""


class Broken(Exception):
    """The connection failed once the request may have been sent (reset, cut, garbled)."""


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: Mapping[str, str]  # case-insensitive
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


class Transport(Protocol):
    """What the HTTP backend needs from a client; tests wrap the real one to inject faults."""

    async def post(self, path: str, body: bytes, headers: Mapping[str, str] | None = None) -> Reply: ...

    def stats(self) -> dict[str, float]: ...

    async def close(self) -> None: ...


class PooledClient:
    """Keep-alive connections to one origin. Must be created inside the running event loop."""

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str],
        timeout: float,
        connect_timeout: float,
        max_connections: int,
        tls: ssl.SSLContext | bool = True,
        keepalive: float = 30,
    ) -> None:
        self.base = base_url.rstrip("/") + "/"
        # No cookie jar: every call authenticates on its own, and a session cookie one
        # client's CiviCRM user earned must never ride along on another client's call.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=max_connections, limit_per_host=0, keepalive_timeout=keepalive, ssl=tls
            ),
            headers={"User-Agent": USER_AGENT, **headers},
            timeout=aiohttp.ClientTimeout(total=timeout, connect=connect_timeout),
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
        )

    async def post(self, path: str, body: bytes, headers: Mapping[str, str] | None = None) -> Reply:
        try:
            async with self._session.post(
                self.base + path, data=body, headers=headers, allow_redirects=False
            ) as response:
                content = await response.read()
                return Reply(response.status, response.headers, content)
        # Order matters: the connect-side classes derive from the broader ones below them.
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise Unreachable(type(exc).__name__) from None
        except TimeoutError as exc:
            raise TimedOut(type(exc).__name__) from None
        except aiohttp.ClientError as exc:
            raise Broken(type(exc).__name__) from None

    def stats(self) -> dict[str, float]:
        """Open and idle pooled connections (aiohttp keeps no public count: read defensively)."""
        connector = self._session.connector
        idle = getattr(connector, "_conns", None)
        busy = getattr(connector, "_acquired", None)
        if idle is None or busy is None:
            return {}
        n_idle = sum(len(v) for v in idle.values())
        return {"connections": float(n_idle + len(busy)), "idle_connections": float(n_idle)}

    async def close(self) -> None:
        await self._session.close()
