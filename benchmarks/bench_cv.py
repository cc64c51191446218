"""Benchmark: Contact.get through the gateway on cv (process per call) and on cv pipe pools,
and through civicrmapi's ``CvApiV4``, all against the cv stand-in with a simulated bootstrap.

Run by hand (not a test)::

    python -m benchmarks.bench_cv            # 200 calls per mode, 0.3 s boot
    python -m benchmarks.bench_cv --calls 50 --boot-delay 0.3 --pools 1,4
    python -m benchmarks.bench_cv --overhead-only --overhead-calls 600 --call-delay 0.002

The overhead part (always run first) compares, one caller at a time, a raw ``cv pipe`` round
trip (a lean client writing the JSON-RPC line to a worker of its own and reading the answer)
with the same call through the gateway's pipe backend (the ASGI app called in process, no HTTP
client or server: the gateway's own cost). Both run in alternating rounds, so a load change on
the machine hits both alike. ``--call-delay`` makes the stand-in take that long per call, to
model a real CiviCRM (a warm ``cv pipe`` answers this call in 2.3-2.5 ms on a real site).

Every mode answers the same call (``Contact.get``, 25 contacts, two fields) against the same
site. The gateway is driven over HTTP (httpx on its ASGI app) in the benchmark's own process.
Per-call modes get ``--cv-concurrency`` callers: the gateway runs that many cv processes at
once, and civicrmapi (synchronous, ``sh -c`` per call) gets as many threads, so both run the
same number of cv processes in parallel and neither queues. Pipe pools get ``--clients``
callers. Pools are started (and their bootstrap paid) before timing starts:
that cost is paid once per worker per ``pipe_max_calls`` calls. Figures vary with the machine;
compare the ratios, all measured in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from gateway.settings import Settings
from gateway.web.app import create_app

PARAMS: dict[str, Any] = {"select": ["id", "display_name"], "where": [], "limit": 25}


@dataclass
class Result:
    mode: str
    calls: int
    errors: int
    wall: float
    latencies: list[float]

    @property
    def throughput(self) -> float:
        return self.calls / self.wall

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def make_site(root: Path, contacts: int) -> Path:
    """A stand-in site with demo contacts (the stand-in finds it from --cwd)."""
    from gateway.sandbox.engine import Sandbox

    site = root / "site"
    site.mkdir()
    Sandbox(str(site / "civicrm.sandbox.sqlite"), demo=contacts).close()
    return site


async def drive(mode: str, calls: int, clients: int, one: Callable[[], Awaitable[bool]]) -> Result:
    """``calls`` calls of ``one`` by ``clients`` concurrent callers; latency of each."""
    latencies: list[float] = []
    errors = 0
    remaining = iter(range(calls))

    async def caller() -> None:
        nonlocal errors
        for _ in remaining:
            started = time.perf_counter()
            ok = await one()
            latencies.append(time.perf_counter() - started)
            errors += 0 if ok else 1

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(clients)))
    return Result(mode, calls, errors, time.perf_counter() - started, latencies)


async def through_gateway(mode: str, settings: Settings, calls: int, clients: int) -> Result:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost", timeout=120) as client:

            async def one() -> bool:
                response = await client.post("/v4/Contact/get", json=PARAMS)
                return response.status_code == 200 and len(response.json()) == 25

            if not await one():  # warm-up, and a check that the mode works at all
                raise SystemExit(f"{mode}: the first call failed")
            return await drive(mode, calls, clients, one)


async def through_civicrmapi(command: str, site: Path, calls: int, threads: int) -> Result:
    from civicrmapi import CvApiV4

    # The same work in each cv process as the gateway's: as admin, permission checks on.
    api = CvApiV4(cv=f"{command} --user=admin", cwd=str(site))
    pool = ThreadPoolExecutor(max_workers=threads)
    loop = asyncio.get_running_loop()

    async def one() -> bool:
        params = {**PARAMS, "checkPermissions": True}
        records = await loop.run_in_executor(pool, api, "Contact", "get", params)
        return isinstance(records, list) and len(records) == 25

    try:
        if not await one():
            raise SystemExit("civicrmapi: the first call failed")
        return await drive(f"civicrmapi CvApiV4 ({threads} threads)", calls, threads, one)
    finally:
        pool.shutdown()


async def asgi_post(app: Any, path: bytes, body: bytes) -> tuple[int, bytes]:
    """One POST straight into the ASGI app: what a lean client costs, nothing more."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path.decode(),
        "raw_path": path,
        "query_string": b"",
        "root_path": "",
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
        "state": {},
        "headers": [
            (b"host", b"gateway"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    received = False
    status = 0
    chunks: list[bytes] = []
    complete = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": body, "more_body": False}
        await complete.wait()  # as uvicorn: "disconnected" once the response is sent
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                complete.set()

    await app(scope, receive, send)
    return status, b"".join(chunks)


async def pipe_overhead(
    command: str, site: Path, calls: int, rounds: int = 10
) -> tuple[list[float], list[float], float, float]:
    """Raw pipe round trips and gateway-through-pipe calls, alternating: their latencies, and
    this process's CPU seconds per call on each side (what the load cannot inflate much)."""
    settings = Settings(
        backend="pipe",
        cv_command=command,
        cv_cwd=str(site),
        cv_user="admin",
        pipe_size=1,
        pipe_max_calls=1_000_000,
        cv_timeout=120,
        pipe_start_timeout=120,
    )
    app = create_app(settings)
    body = orjson.dumps(PARAMS)
    request = (
        orjson.dumps(
            {
                "jsonrpc": "2.0",
                "method": "api4",
                "params": ["Contact", "get", {**PARAMS, "checkPermissions": True}],
                "id": 1,
            }
        )
        + b"\n"
    )
    raw = await asyncio.create_subprocess_exec(
        *shlex.split(command),
        f"--cwd={site}",
        "--user=admin",
        "pipe",
        "vtl",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert raw.stdin is not None and raw.stdout is not None
    await raw.stdout.readline()  # the handshake

    async def raw_call() -> None:
        assert raw.stdin is not None and raw.stdout is not None
        raw.stdin.write(request)
        await raw.stdin.drain()
        answer = orjson.loads(await raw.stdout.readline())
        if len(answer["result"]) != 25:
            raise SystemExit(f"raw pipe: unexpected answer {answer!r:.200}")

    async def gateway_call() -> None:
        status, answer = await asgi_post(app, b"/v4/Contact/get", body)
        if status != 200 or len(orjson.loads(answer)) != 25:
            raise SystemExit(f"gateway pipe: {status} {answer[:200]!r}")

    raws: list[float] = []
    gateways: list[float] = []
    cpu = {"raw": 0.0, "gateway": 0.0}
    try:
        async with app.router.lifespan_context(app):
            for _ in range(20):  # warm both up
                await raw_call()
                await gateway_call()
            for _ in range(rounds):
                for name, call, into in (("raw", raw_call, raws), ("gateway", gateway_call, gateways)):
                    cpu_started = time.process_time()
                    for _ in range(max(1, calls // rounds)):
                        started = time.perf_counter()
                        await call()
                        into.append(time.perf_counter() - started)
                    cpu[name] += time.process_time() - cpu_started
    finally:
        raw.stdin.close()
        await raw.wait()
    return raws, gateways, cpu["raw"] / len(raws), cpu["gateway"] / len(gateways)


def report_overhead(
    raws: list[float], gateways: list[float], raw_cpu: float, gateway_cpu: float, args: argparse.Namespace
) -> None:
    raw, gateway = statistics.median(raws), statistics.median(gateways)
    ratio = gateway / raw
    print(
        f"\npipe overhead: Contact.get (25 contacts), one caller, {len(raws)} calls each, "
        f"stand-in call delay {args.call_delay * 1000:g} ms, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"raw cv pipe round trip       p50 {raw * 1000:6.3f} ms  p90 "
        f"{statistics.quantiles(raws, n=10)[-1] * 1000:6.3f} ms"
    )
    print(
        f"gateway through pipe (ASGI)  p50 {gateway * 1000:6.3f} ms  p90 "
        f"{statistics.quantiles(gateways, n=10)[-1] * 1000:6.3f} ms"
    )
    print(
        f"gateway adds {(gateway - raw) * 1000:.3f} ms a call; ratio {ratio:.2f}x "
        f"(target <= 1.3x: {'met' if ratio <= 1.3 else 'NOT met'})"
    )
    print(
        f"CPU of this process per call: raw client {raw_cpu * 1e6:.0f} us, gateway "
        f"{gateway_cpu * 1e6:.0f} us (the gateway's own work, less sensitive to the load)"
    )


def report(results: list[Result], baseline: Result, args: argparse.Namespace) -> None:
    print(
        f"\nContact.get x {args.calls} (per-call modes: {args.per_call_calls}), boot delay "
        f"{args.boot_delay:g} s, cv concurrency {args.cv_concurrency} (per-call callers), "
        f"{args.clients} pipe callers, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}"
    )
    header = (
        f"{'mode':<34} {'calls':>5} {'err':>4} {'wall s':>7} {'calls/s':>9} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'x cv':>7}"
    )
    print(header)
    print("-" * len(header))
    for result in results:
        print(
            f"{result.mode:<34} {result.calls:>5} {result.errors:>4} {result.wall:>7.2f} "
            f"{result.throughput:>9.1f} {result.percentile(0.5) * 1000:>8.1f} "
            f"{result.percentile(0.99) * 1000:>8.1f} "
            f"{result.throughput / baseline.throughput:>7.1f}"
        )
    best = max(
        (r for r in results if r.mode.startswith("gateway pipe")), key=lambda r: r.throughput, default=None
    )
    civicrmapi = next((r for r in results if r.mode.startswith("civicrmapi")), None)
    print()
    if best is not None:
        ratio = best.throughput / baseline.throughput
        print(
            f"best pipe pool / cv per call: {ratio:.1f}x "
            f"(target >= 50x: {'met' if ratio >= 50 else 'NOT met'})"
        )
    if civicrmapi is not None:
        ratio = baseline.throughput / civicrmapi.throughput
        print(
            f"cv per call / civicrmapi: {ratio:.2f}x "
            f"(target >= 1: {'met' if ratio >= 1 else 'NOT met'}); p50 "
            f"{baseline.percentile(0.5) * 1000:.0f} ms vs "
            f"{civicrmapi.percentile(0.5) * 1000:.0f} ms"
        )
    median_cv = statistics.median(baseline.latencies)
    print(
        f"median cv process: {median_cv * 1000:.0f} ms, of which the simulated bootstrap "
        f"is {args.boot_delay * 1000:.0f} ms"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200, help="calls per pipe mode")
    parser.add_argument(
        "--per-call-calls",
        type=int,
        default=None,
        help="calls for cv per call and civicrmapi (default: --calls)",
    )
    parser.add_argument("--boot-delay", type=float, default=0.3)
    parser.add_argument("--clients", type=int, default=8, help="concurrent HTTP callers")
    parser.add_argument("--cv-concurrency", type=int, default=4)
    parser.add_argument("--pools", default="1,2,4", help="pipe pool sizes")
    parser.add_argument("--contacts", type=int, default=200)
    parser.add_argument("--no-civicrmapi", action="store_true")
    parser.add_argument(
        "--overhead-calls", type=int, default=400, help="calls per side in the pipe overhead comparison"
    )
    parser.add_argument(
        "--call-delay",
        type=float,
        default=0.0,
        help="seconds the stand-in takes per API call (models CiviCRM's work)",
    )
    parser.add_argument("--overhead-only", action="store_true", help="only the pipe overhead comparison")
    args = parser.parse_args()
    args.per_call_calls = args.per_call_calls or args.calls
    logging.basicConfig(level=logging.ERROR)

    with tempfile.TemporaryDirectory() as tmp:
        site = make_site(Path(tmp), args.contacts)
        command = shlex.join(
            [sys.executable, "-m", "gateway.sandbox.cv", "--boot-delay", str(args.boot_delay)]
        )
        if args.call_delay:
            os.environ["CV_SANDBOX_CALL_DELAY"] = str(args.call_delay)  # inherited by cv
        print("pipe overhead ...", file=sys.stderr)
        raws, gateways, raw_cpu, gateway_cpu = await pipe_overhead(command, site, args.overhead_calls)
        report_overhead(raws, gateways, raw_cpu, gateway_cpu, args)
        if args.overhead_only:
            return
        common: dict[str, Any] = {
            "cv_command": command,
            "cv_cwd": str(site),
            "cv_user": "admin",
            "cv_timeout": 120,
            "cv_concurrency": args.cv_concurrency,
            "pipe_max_calls": 1_000_000,
            "pipe_start_timeout": 120,
        }
        results = []
        print("cv per call ...", file=sys.stderr)
        baseline = await through_gateway(
            "gateway cv (process per call)",
            Settings(backend="cv", **common),
            args.per_call_calls,
            args.cv_concurrency,
        )
        results.append(baseline)
        for size in [int(n) for n in args.pools.split(",") if n]:
            print(f"pipe pool of {size} ...", file=sys.stderr)
            results.append(
                await through_gateway(
                    f"gateway pipe, pool of {size}",
                    Settings(backend="pipe", pipe_size=size, **common),
                    args.calls,
                    args.clients,
                )
            )
        if not args.no_civicrmapi:
            print("civicrmapi ...", file=sys.stderr)
            results.append(await through_civicrmapi(command, site, args.per_call_calls, args.cv_concurrency))
        report(results, baseline, args)


if __name__ == "__main__":
    asyncio.run(main())
