"""A spec file for a site with many entities: the sandbox's own metadata, its entities cloned
under new names until there are ``count``. A real site has about 150; the sandbox has 14.
Used by the browser test and ``benchmarks/bench_docs.py``."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path

from gateway.backends.sandbox import SandboxBackend
from gateway.services import sandbox_config
from gateway.settings import Settings
from gateway.web.openapi.metadata import Metadata, fetch_metadata, save_spec


async def _sandbox_metadata() -> Metadata:
    backend = SandboxBackend(sandbox_config(Settings(backend="sandbox", sandbox_demo=0)))
    await backend.start()
    try:
        return await fetch_metadata(backend)
    finally:
        await backend.close()


def write_big_spec(path: Path, count: int = 150) -> list[str]:
    """Write the spec file; returns the entity names, sorted."""
    real = asyncio.run(_sandbox_metadata()).entities
    entities = list(real)
    n = 0
    while len(entities) < count:
        clone = copy.deepcopy(real[n % len(real)])
        clone["name"] = f"{clone['name']}Copy{n:03d}"
        clone["title"] = f"{clone.get('title') or clone['name']} (copy {n})"
        entities.append(clone)
        n += 1
    save_spec(Metadata(entities, source="sandbox, cloned"), path)
    return sorted(e["name"] for e in entities)
