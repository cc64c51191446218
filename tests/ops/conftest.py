"""Fixtures for the operations tests: a throwaway redis-server on loopback, and /metrics
parsed into samples."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.conftest import GatewayProcess


def samples(text: str) -> list[Sample]:
    """Every sample of a Prometheus text exposition."""
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(text: str, name: str, **labels: str) -> float:
    """The one sample called ``name`` whose labels include ``labels``."""
    found = [
        s.value
        for s in samples(text)
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) == 1, f"{len(found)} samples {name}{labels}"
    return found[0]


class HangingUpstream:
    """An upstream that takes every request and answers none until ``release`` is set (or
    ``bound`` seconds have passed)."""

    def __init__(self, bound: float = 5) -> None:
        self.requests = 0
        self.bound = bound
        self.release = threading.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.requests += 1
        await asyncio.to_thread(self.release.wait, self.bound)  # set from the test's thread


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[object]:
    """``civicrm-gateway serve`` processes; several workers start slowly on a busy machine (each
    imports the whole gateway), hence the long wait."""
    started: list[GatewayProcess] = []

    def start(env: dict[str, str]) -> GatewayProcess:
        proc = GatewayProcess(env, tmp_path)
        started.append(proc)
        return proc.wait_ready(timeout=120)

    yield start
    for proc in started:
        proc.stop()
