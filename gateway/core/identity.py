"""Who CiviCRM sees for a call: a module of its own, so a backend needs nothing else of the
clients and policies to act as one."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Identity:
    """Who CiviCRM should see for a client's calls (None: the gateway's own credentials)."""

    api_key: str | None = None
    cv_user: str | None = None

    def __repr__(self) -> str:  # never print the key
        return f"Identity(api_key={'***' if self.api_key else None}, cv_user={self.cv_user!r})"
