"""Backends: where a call goes (embedded sandbox, CiviCRM over HTTP, cv, cv pipe)."""

from __future__ import annotations

from ..settings import Settings
from .base import Backend


def make_backend(settings: Settings) -> Backend:
    """The backend the settings ask for (imported lazily: each pulls in its own needs)."""
    if settings.backend == "http":
        from .http import HttpBackend

        return HttpBackend(settings)
    if settings.backend == "sandbox":
        from .sandbox import SandboxBackend

        return SandboxBackend(settings)
    if settings.backend == "cv":
        from .cv import CvBackend

        return CvBackend(settings)
    if settings.backend == "pipe":
        from .pipe import PipeBackend

        return PipeBackend(settings)
    raise ValueError(f"unknown backend {settings.backend!r}")


__all__ = ["Backend", "make_backend"]
