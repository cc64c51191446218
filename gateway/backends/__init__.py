"""Backends: where a call goes (embedded sandbox, CiviCRM over HTTP, cv, cv pipe)."""

from __future__ import annotations

from gateway.backends.base import Backend
from gateway.settings import Settings


def make_backend(settings: Settings) -> Backend:
    """The backend the settings ask for (imported lazily: each pulls in its own needs)."""
    if settings.backend == "http":
        from gateway.backends.http import HttpBackend

        return HttpBackend(settings)
    if settings.backend == "sandbox":
        from gateway.backends.sandbox import SandboxBackend

        return SandboxBackend(settings)
    if settings.backend == "cv":
        from gateway.backends.cv import CvBackend

        return CvBackend(settings)
    if settings.backend == "pipe":
        from gateway.backends.pipe import PipeBackend

        return PipeBackend(settings)
    raise ValueError(f"unknown backend {settings.backend!r}")


__all__ = ["Backend", "make_backend"]
