"""Where webhooks may go: only hosts the operator listed (``CIVI_GATEWAY_WEBHOOK_HOSTS``).

A client names a URL; the gateway POSTs to it from inside the operator's network. Left open,
that lets any client with ``webhooks = true`` make the gateway call internal services (or
CiviCRM itself, with whatever it trusts from the gateway's address). So a URL is accepted only
when its host (and port, when the entry names one) is on the list, it carries no user info,
and it is not CiviCRM's own origin; it is checked again at every delivery, and redirects are
never followed.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from gateway.core.errors import GatewayError, invalid_request
from gateway.core.policy import denied

MAX_URL_CHARS = 2048


def _origin(url: str) -> tuple[str, int] | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    return parts.hostname.lower(), port


class Targets:
    def __init__(self, hosts: list[str], civicrm_url: str | None = None) -> None:
        self.entries: set[tuple[str, int | None]] = set()
        for entry in hosts:
            entry = entry.strip().lower()
            host, sep, port = entry.rpartition(":")
            if sep and port.isdigit() and (host.endswith("]") or ":" not in host):
                self.entries.add((host.strip("[]"), int(port)))
            elif entry:
                self.entries.add((entry.strip("[]"), None))
        self.civicrm = _origin(civicrm_url) if civicrm_url else None

    @property
    def enabled(self) -> bool:
        return bool(self.entries)

    def check(self, url: str) -> str:
        """``url`` if webhooks may be delivered there; else a 400 or 403 saying why."""
        if not isinstance(url, str) or not url or len(url) > MAX_URL_CHARS:
            raise invalid_request(f"url must be an http(s) URL of at most {MAX_URL_CHARS} characters.")
        parts = urlsplit(url)
        origin = _origin(url)
        if origin is None or parts.username is not None or parts.password is not None or parts.fragment:
            raise invalid_request("url must be http:// or https://host[:port]/path, without user info or #.")
        host, port = origin
        if self.civicrm is not None and origin == self.civicrm:
            raise denied("Webhooks cannot be delivered to CiviCRM itself.")
        if (host, port) not in self.entries and (host, None) not in self.entries:
            raise denied(
                f"Webhooks may be delivered only to hosts the operator allowed "
                f"(CIVI_GATEWAY_WEBHOOK_HOSTS); {host}:{port} is not one of them."
            )
        return url

    def allows(self, url: str) -> bool:
        try:
            self.check(url)
        except GatewayError:
            return False
        return True
