"""Idempotency-Key benchmark, run by hand: ``python benchmarks/idempotency.py``.

The latency a key adds to a write: Contact.create through the gateway's ASGI app on the
in-process sandbox (no network: what is left is the gateway plus the store), with and without
an ``Idempotency-Key``, alternating one of each so the machine's drift cancels out. Once on
the SQLite store (the default, in a temporary state directory) and once on Redis (a
redis-server on a free loopback port, when one is installed). Prints p50 and p95 of each and
the added p50/p95.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from gateway.settings import Settings
from gateway.web.app import create_app

BODY = {"contact_type": "Individual", "first_name": "Bench", "last_name": "Mark"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def quantiles(samples: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(samples, n=20)
    return statistics.median(samples), cuts[18]


async def measure(settings: Settings, rounds: int) -> tuple[list[float], list[float]]:
    app = create_app(settings)
    plain: list[float] = []
    keyed: list[float] = []
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as gw,
    ):
        for i in range(rounds + 20):  # the first 20 warm up (metadata, connections, files)
            for samples, headers in ((plain, {}), (keyed, {"Idempotency-Key": uuid.uuid4().hex})):
                started = time.perf_counter()
                r = await gw.post("/v4/Contact/create", json=BODY, headers=headers)
                elapsed = time.perf_counter() - started
                assert r.status_code == 200, r.text
                if i >= 20:
                    samples.append(elapsed * 1000)
    return plain, keyed


def report(name: str, plain: list[float], keyed: list[float]) -> None:
    p50, p95 = quantiles(plain)
    k50, k95 = quantiles(keyed)
    print(
        f"{name:<7} without key p50 {p50:6.2f} ms  p95 {p95:6.2f} ms | with key p50 "
        f"{k50:6.2f} ms  p95 {k95:6.2f} ms | added p50 {k50 - p50:+.2f} ms  p95 "
        f"{k95 - p95:+.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=500)
    args = parser.parse_args()
    base = {"backend": "sandbox", "sandbox_db": ":memory:", "sandbox_demo": 0, "allow_anonymous": True}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.pop("CIVI_GATEWAY_IDEMPOTENCY_STORE", None)
        settings = Settings(**base, state_dir=Path(tmp), idempotency_store="sqlite")
        report("sqlite", *asyncio.run(measure(settings, args.rounds)))
        server = shutil.which("redis-server")
        if server is None:
            print("redis   skipped: redis-server is not installed")
            return
        port = free_port()
        proc = subprocess.Popen(
            [
                server,
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                tmp,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("redis-server did not start") from None
                    time.sleep(0.05)
            settings = Settings(
                **base,
                state_dir=Path(tmp),
                idempotency_store="redis",
                rate_limit_storage=f"redis://127.0.0.1:{port}/0",
            )
            report("redis", *asyncio.run(measure(settings, args.rounds)))
        finally:
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    main()
