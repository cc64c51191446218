"""Backends: where a call goes (embedded sandbox, CiviCRM over HTTP, cv, cv pipe).

Each takes the parsed :class:`~gateway.core.call.Call` and a small config of its own
(:mod:`gateway.backends.config`); :func:`gateway.services.make_backend` picks and builds one
from the settings.

May import: :mod:`gateway.sandbox`, :mod:`gateway.core`, :mod:`gateway.telemetry`. Never the
call flow, a face or the settings.
"""

from __future__ import annotations

from gateway.backends.base import Backend

__all__ = ["Backend"]
