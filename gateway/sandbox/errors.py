"""Exceptions shaped like the ones CiviCRM's API raises, so callers can map them the same way."""

from __future__ import annotations

from typing import Any


class CiviError(Exception):
    """A CiviCRM API exception as the real API raises it.

    ``status`` is the HTTP status REST would answer, ``error_code`` what APIv4 REST shows,
    ``v3_code`` the APIv3 ``error_code`` (e.g. "not-found"), ``extra`` extra envelope keys.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 500,
        error_code: int | str = 0,
        v3_code: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.error_code = error_code
        self.v3_code = v3_code
        self.extra = extra or {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status={self.status})"


class Unauthorized(CiviError):
    """Permission denied (CiviCRM's UnauthorizedException): REST answers 403."""

    def __init__(self, message: str = "Authorization failed", *, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message, status=403, error_code=0, v3_code="unauthorized", extra=extra)
