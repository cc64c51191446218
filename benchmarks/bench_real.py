"""Benchmark: the gateway's own cost on a real CiviCRM (the kit in ``tests/real/kit``).

Run by hand (not a test), with the kit running (``/tmp/civi/bin/start.sh``)::

    python -m benchmarks.bench_real                      # the kit at /tmp/civi
    python -m benchmarks.bench_real --civi /tmp/civi --rounds 10 --per-round 30 --pool 4
    python -m benchmarks.bench_real --skip-cold          # leave out the cold start part
    python -m benchmarks.bench_real --skip-steady        # only the cold start part

Every path answers the same call: ``Contact.get`` of 25 Individuals with ``id``,
``display_name``, ``email_primary.email``, ordered by id, as the kit's admin. The gateways are
real ``civicrm-gateway serve`` (uvicorn) processes on 127.0.0.1, validation on, default
middlewares (access log at info to a file, metrics, gzip); every request goes to loopback and
the benchmark ends by itself (bounded call counts), stopping what it started.

Prints, from one run:

1. latency at concurrency 1, in interleaved rounds (each round runs every path once, so a
   load change on the shared machine hits all alike): CiviCRM's REST directly, the gateway on
   the http backend, a raw ``cv pipe`` (one JSON-RPC line per call from a lean asyncio client),
   the gateway on the pipe backend; p50/p95 and the ratios;
2. the gateway's CPU time per request (its process's user+system CPU seconds over the
   requests it served in the rounds: what the load on the machine inflates least);
3. throughput at concurrency 1, 4 and 8 of the pipe backend (a pool of ``--pool`` workers)
   against a raw pool of as many ``cv pipe`` workers, and of the http backend against direct
   REST at concurrency 8;
4. cold start (``--skip-cold`` leaves it out): a gateway started with no saved metadata on the
   pipe and cv backends, the time from ready until ``/openapi.json`` answered the whole site,
   and the client calls made while the metadata warm-up ran against those made after it.

HTTP calls use a lean kept-alive client (asyncio streams, no parsing beyond the status line
and Content-Length), on the direct and the gateway paths alike, so the client's own Python
does not weigh on one side. Figures vary with the machine; compare the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson

from tests.conftest import GatewayProcess
from tests.real.conftest import gateway_env
from tests.real.kit import ENV, Kit, find_kit

PARAMS: dict[str, Any] = {
    "select": ["id", "display_name", "email_primary.email"],
    "where": [["contact_type", "=", "Individual"]],
    "orderBy": {"id": "ASC"},
    "limit": 25,
}
RECORDS = 25

Send = Callable[[int], Awaitable[None]]


# --- clients -----------------------------------------------------------------------------------


class Lean:
    """One kept-alive HTTP/1.1 connection on asyncio streams, doing no more than a call needs
    (httpx would spend about a millisecond of Python a call, on the benchmark's side)."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        host, port = url.split("//", 1)[1].rsplit(":", 1)
        self.address = (host, int(port.split("/", 1)[0]))
        self.head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    resent = 0

    async def request(self, path: str, body: bytes, content_type: str) -> tuple[int, bytes]:
        """POST ``body`` to ``path``, or GET ``path`` when ``content_type`` is empty."""
        for _ in range(3):
            try:
                return await self._request(path, body, content_type)
            except (asyncio.IncompleteReadError, ConnectionError):
                # PHP's built-in server, its workers all busy, at times closes a connection
                # it accepted without answering: sent again on a new connection (counted)
                self.close()
                Lean.resent += 1
        return await self._request(path, body, content_type)

    async def _request(self, path: str, body: bytes, content_type: str) -> tuple[int, bytes]:
        if self.streams is None:
            self.streams = await asyncio.open_connection(*self.address)
        reader, writer = self.streams
        if content_type:
            writer.write(
                f"POST {path} HTTP/1.1\r\nHost: {self.address[0]}\r\n{self.head}"
                f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
        else:  # a GET
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.address[0]}\r\n{self.head}\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length: int | None = None
        chunked = False
        for line in head.split(b"\r\n"):
            lowered = line.lower()
            if lowered.startswith(b"content-length:"):
                length = int(line[15:])
            elif lowered.startswith(b"transfer-encoding:") and b"chunked" in lowered:
                chunked = True
        if length is None and not chunked:  # PHP's built-in server: Connection: close
            body = await reader.read()
            self.close()
            return status, body
        if not chunked:
            return status, await reader.readexactly(length or 0)
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            parts.append(await reader.readexactly(size + 2))
            if size == 0:
                return status, b"".join(p[:-2] for p in parts)

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


class RawPipe:
    """A pool of raw ``cv pipe`` workers, each sent one JSON-RPC line per call: the floor the
    pipe backend is measured against."""

    def __init__(self, kit: Kit, size: int) -> None:
        self.kit = kit
        self.size = size
        self.procs: list[asyncio.subprocess.Process] = []
        self.free: asyncio.Queue[asyncio.subprocess.Process] = asyncio.Queue()
        self.line = (
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

    async def start(self) -> None:
        async def one() -> asyncio.subprocess.Process:
            proc = await asyncio.create_subprocess_exec(
                str(self.kit.cv),
                f"--cwd={self.kit.site}",
                "--user=admin",
                "pipe",
                "vtl",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                limit=1 << 24,
            )
            assert proc.stdout is not None
            await proc.stdout.readline()  # the handshake
            return proc

        self.procs = list(await asyncio.gather(*(one() for _ in range(self.size))))
        for proc in self.procs:
            self.free.put_nowait(proc)

    async def call(self, _: int = 0) -> None:
        proc = await self.free.get()
        try:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(self.line)
            await proc.stdin.drain()
            answer = orjson.loads(await proc.stdout.readline())
        finally:
            self.free.put_nowait(proc)
        if len(answer.get("result") or ()) != RECORDS:
            raise SystemExit(f"raw cv pipe: unexpected answer {answer!r:.300}")

    async def close(self) -> None:
        for proc in self.procs:
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def http_sender(url: str, path: str, body: bytes, content_type: str, headers: dict[str, str], n: int):
    """``n`` lean connections, and ``send(i)`` making one call on connection ``i``."""
    conns = [Lean(url, headers) for _ in range(n)]

    async def send(index: int, check: bool = True) -> None:
        """One call on connection ``index``; ``check``: its answer is the 25 records."""
        status, answer = await conns[index].request(path, body, content_type)
        if status != 200:
            raise SystemExit(f"{url}{path}: {status} {answer[:300]!r}")
        if not check:
            return
        records = orjson.loads(answer)
        if isinstance(records, dict):  # CiviCRM's REST: {"values": [...], ...}
            records = records.get("values")
        if len(records) != RECORDS:
            raise SystemExit(f"{url}{path}: {len(records)} records, not {RECORDS}")

    def close() -> None:
        for conn in conns:
            conn.close()

    return send, close


# --- measuring ---------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def timed(send: Send, calls: int, into: list[float]) -> None:
    for _ in range(calls):
        started = time.perf_counter()
        await send(0)
        into.append(time.perf_counter() - started)


async def throughput(send: Send, concurrency: int, calls: int) -> float:
    """Calls a second of ``concurrency`` callers sharing ``calls`` calls."""
    remaining = iter(range(calls))

    async def caller(index: int) -> None:
        for _ in remaining:
            await send(index)

    started = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(concurrency)))
    return calls / (time.perf_counter() - started)


@contextlib.contextmanager
def gateway(kit: Kit, backend: str, folder: Path, **extra: str) -> Iterator[GatewayProcess]:
    env = gateway_env(kit, backend, "admin", CIVI_GATEWAY_LOG_LEVEL="info", **extra)
    env.pop("CIVI_GATEWAY_EXPORT_PAGE_SIZE", None)
    folder.mkdir(parents=True, exist_ok=True)
    process = GatewayProcess(env, folder)
    try:
        process.wait_ready(timeout=120)
        yield process
    finally:
        process.stop()


# --- the parts ---------------------------------------------------------------------------------


async def steady(kit: Kit, args: argparse.Namespace, folder: Path) -> None:
    rest_headers = {"X-Civi-Auth": f"Bearer {kit.admin_key}", "X-Requested-With": "XMLHttpRequest"}
    rest_body = urlencode({"params": orjson.dumps(PARAMS).decode()}).encode()
    form = "application/x-www-form-urlencoded"
    gw_body = orjson.dumps(PARAMS)
    high = max(args.concurrency)
    with (
        gateway(kit, "http", folder / "http") as gw_http,
        gateway(kit, "pipe", folder / "pipe", CIVI_GATEWAY_PIPE_SIZE=str(args.pool)) as gw_pipe,
    ):
        raw = RawPipe(kit, args.pool)
        await raw.start()
        rest, close_rest = http_sender(
            kit.url, "/civicrm/ajax/api4/Contact/get", rest_body, form, rest_headers, high
        )
        via_http, close_http = http_sender(
            gw_http.url, "/v4/Contact/get", gw_body, "application/json", {}, high
        )
        via_pipe, close_pipe = http_sender(
            gw_pipe.url, "/v4/Contact/get", gw_body, "application/json", {}, high
        )
        paths: dict[str, Send] = {
            "CiviCRM REST directly": rest,
            "gateway, http backend": via_http,
            "raw cv pipe": raw.call,
            "gateway, pipe backend": via_pipe,
        }
        pids = {"gateway, http backend": gw_http.proc.pid, "gateway, pipe backend": gw_pipe.proc.pid}
        try:
            for send in paths.values():  # warm every path up (metadata cached, workers warm)
                for _ in range(20):
                    await send(0)
            latencies: dict[str, list[float]] = {name: [] for name in paths}
            cpu = dict.fromkeys(pids, 0.0)
            for _ in range(args.rounds):
                for name, send in paths.items():
                    before = cpu_seconds(pids[name]) if name in pids else 0.0
                    await timed(send, args.per_round, latencies[name])
                    if name in pids:
                        cpu[name] += cpu_seconds(pids[name]) - before
            floors = await floor(gw_pipe, raw, args.rounds * args.per_round)
            load = os.getloadavg()
            print(
                f"\nContact.get, 25 Individuals, 3 fields, by id; concurrency 1; {args.rounds} "
                f"interleaved rounds of {args.per_round} calls per path; {os.cpu_count()} CPUs; "
                f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
            )
            print(f"{'path':<26} {'p50 ms':>8} {'p95 ms':>8}")
            for name, values in latencies.items():
                print(f"{name:<26} {pct(values, 0.5) * 1000:>8.2f} {pct(values, 0.95) * 1000:>8.2f}")

            def ratio(a: str, b: str, q: float) -> float:
                return pct(latencies[a], q) / pct(latencies[b], q)

            pipe50 = ratio("gateway, pipe backend", "raw cv pipe", 0.5)
            pipe95 = ratio("gateway, pipe backend", "raw cv pipe", 0.95)
            http50 = ratio("gateway, http backend", "CiviCRM REST directly", 0.5)
            print(
                f"gateway pipe / raw pipe: p50 {pipe50:.2f}x (target <= 1.3), "
                f"p95 {pipe95:.2f}x (target <= 1.5)"
            )
            print(f"gateway http / direct REST: p50 {http50:.2f}x (target <= 1.05)")
            calls = args.rounds * args.per_round
            for name, seconds in cpu.items():
                print(
                    f"{name}: {seconds / calls * 1000:.2f} ms of gateway CPU per request "
                    f"({seconds:.2f} s over {calls} requests; pipe target <= 0.5)"
                )

            server, client = floors
            own = cpu["gateway, pipe backend"] / calls - server - client
            print(
                f"floors, same run: a GET /healthz on the pipe gateway {server * 1000:.2f} ms of its "
                f"CPU (server, middlewares, no call); the raw cv pipe client's own CPU "
                f"{client * 1000:.2f} ms a call (write a line, wait, read a line, decode); the "
                f"pipe gateway's work beyond both {own * 1000:.2f} ms a call"
            )

            print(
                f"\nthroughput, calls/s (pipe pools of {args.pool}; {args.throughput_calls} calls "
                f"per measure, median of {args.throughput_rounds} interleaved rounds)"
            )
            rows = [("raw cv pipe pool", raw.call), ("gateway, pipe backend", via_pipe)]
            figures: dict[tuple[str, int], list[float]] = {}
            for _ in range(args.throughput_rounds):
                for c in args.concurrency:
                    for name, send in rows:
                        figures.setdefault((name, c), []).append(
                            await throughput(send, c, args.throughput_calls)
                        )
                for name, send in (("CiviCRM REST directly", rest), ("gateway, http backend", via_http)):
                    figures.setdefault((name, high), []).append(
                        await throughput(send, high, args.throughput_calls)
                    )
            print(f"{'path':<26} " + " ".join(f"{'c=' + str(c):>8}" for c in args.concurrency))
            for name in ("raw cv pipe pool", "gateway, pipe backend"):
                print(
                    f"{name:<26} "
                    + " ".join(f"{statistics.median(figures[(name, c)]):>8.0f}" for c in args.concurrency)
                )

            def median(name: str, c: int) -> float:
                return statistics.median(figures[(name, c)])

            print(
                f"{'gateway pipe / raw pool':<26} "
                + " ".join(
                    f"{median('gateway, pipe backend', c) / median('raw cv pipe pool', c):>7.2f}x"
                    for c in args.concurrency
                )
                + f"   (target >= 0.8x at c={2 * args.pool})"
            )
            rest_c = statistics.median(figures[("CiviCRM REST directly", high)])
            http_c = statistics.median(figures[("gateway, http backend", high)])
            print(
                f"http backend at c={high}: {http_c:.0f} calls/s vs direct REST {rest_c:.0f} "
                f"({http_c / rest_c:.2f}x, target: parity); calls sent again after a closed "
                f"connection: {Lean.resent}"
            )
        finally:
            close_rest()
            close_http()
            close_pipe()
            await raw.close()


async def floor(gw: GatewayProcess, raw: RawPipe, calls: int) -> tuple[float, float]:
    """CPU seconds a request that no gateway can go below: a ``GET /healthz`` on ``gw`` (its
    HTTP server and middlewares, no call), and this process's own per call of a raw pipe call
    (what any client of ``cv pipe`` spends writing, waiting for and decoding an answer)."""
    health, close = http_sender(gw.url, "/healthz", b"", "", {}, 1)
    try:
        for _ in range(20):
            await health(0, False)
        before = cpu_seconds(gw.proc.pid)
        for _ in range(calls):
            await health(0, False)
        server = (cpu_seconds(gw.proc.pid) - before) / calls
    finally:
        close()
    times = os.times()
    for _ in range(calls):
        await raw.call()
    after = os.times()
    client = (after.user + after.system - times.user - times.system) / calls
    return server, client


async def cold(kit: Kit, backend: str, folder: Path) -> None:
    """A gateway started with no saved metadata: how soon ``/openapi.json`` answers the whole
    site, and how the warm-up running meanwhile slows client calls."""
    started = time.perf_counter()
    with gateway(
        kit,
        backend,
        folder,
        CIVI_GATEWAY_OPENAPI_PREBUILD="true",
        CIVI_GATEWAY_STATE_DIR=str(folder / "state"),
    ) as gw:
        ready = time.perf_counter() - started
        send, close = http_sender(gw.url, "/v4/Contact/get", orjson.dumps(PARAMS), "application/json", {}, 1)
        during: list[float] = []
        after: list[float] = []

        async def document() -> tuple[float, int]:
            t0 = time.perf_counter()
            async with httpx.AsyncClient(timeout=120) as client:
                response = await client.get(gw.url + "/openapi.json")
            paths = len(response.json().get("paths", {})) if response.status_code == 200 else -1
            return time.perf_counter() - t0, paths

        def built() -> bool:
            return "document(s) built in the background" in gw.log.read_text()

        try:
            doc = asyncio.create_task(document())
            await send(0)  # the call's own metadata (entity, actions, fields), not the warm-up
            while not (doc.done() and built()):
                t0 = time.perf_counter()
                await send(0)
                during.append(time.perf_counter() - t0)
            seconds, paths = await doc
            await timed(send, max(10, len(during)), after)
        finally:
            close()
        slow = statistics.median(during) / statistics.median(after) if during else float("nan")
        print(
            f"{backend:>4} backend: ready {ready:.1f} s after start; cold /openapi.json "
            f"{seconds:.2f} s after ready ({paths} paths; target < 2 s); {len(during)} client "
            f"calls during the warm-up, p50 {statistics.median(during) * 1000 if during else 0:.1f} ms vs "
            f"{statistics.median(after) * 1000:.1f} ms after ({slow:.2f}x; target <= 1.2)"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--civi", default=os.environ.get(ENV, "/tmp/civi"), help="the kit's prefix")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--per-round", type=int, default=30)
    parser.add_argument("--pool", type=int, default=4, help="pipe pool size (gateway and raw)")
    parser.add_argument("--concurrency", default="1,4,8")
    parser.add_argument("--throughput-calls", type=int, default=400)
    parser.add_argument("--throughput-rounds", type=int, default=3)
    parser.add_argument("--skip-cold", action="store_true")
    parser.add_argument("--skip-steady", action="store_true", help="only the cold start part")
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c]
    os.environ[ENV] = args.civi
    kit = find_kit()
    if kit is None:
        raise SystemExit(f"no kit at {args.civi}")
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_steady:
            await steady(kit, args, Path(tmp))
        if not args.skip_cold:
            print("\ncold start (no saved metadata; prebuild on, as `serve` does)")
            for backend in ("pipe", "cv"):
                await cold(kit, backend, Path(tmp) / f"cold-{backend}")


if __name__ == "__main__":
    asyncio.run(main())
