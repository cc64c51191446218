"""The OpenAPI document built from CiviCRM's own metadata, and offline /docs and /redoc."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from ..backends import Backend
    from ..settings import Settings


def install_docs(app: FastAPI, backend: Backend, settings: Settings) -> None:
    """Serve the schema and the documentation pages (filled in by the OpenAPI work)."""
