"""Gateway benchmarks, run by hand: ``/work/venv/bin/python benchmarks/bench_gateway.py``.

Everything runs on loopback in one go against the same upstream: the sandbox CiviCRM wire app
(``civicrm-gateway sandbox``) as its own uvicorn process, and ``civicrm-gateway serve`` on the
HTTP backend in front of it. Figures are ratios measured within one run, so the machine's speed
mostly cancels out. Needs the ``bench`` extra (civicrmapi 0.5).

(a) civicrmapi's HttpApiV4 straight to the upstream vs a kept-alive client through the gateway
    (httpx, and the stdlib's http.client), with the upstream on HTTP, then on HTTPS;
(b) latency the gateway adds over a direct call, at concurrency 1 and 32, with httpx on both
    paths and then with a lean asyncio client on both (see ``LeanConnection``);
(c) a 100,000-record get: time and the gateway's peak RSS vs the payload size, buffered and
    streamed (NDJSON);
(d) one batch of 50 calls vs 50 single calls.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "bench-admin-key-0123456789abcdef"
PARAMS = {"select": ["id", "display_name"], "where": [["id", "=", 2]]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 60, verify: str | bool = True) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited")
        with contextlib.suppress(httpx.TransportError):
            httpx.get(url, timeout=1, verify=verify)
            return
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not start")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1, so the upstream can speak HTTPS like a real site."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@contextlib.contextmanager
def upstream(db: Path, tls: tuple[Path, Path] | None = None) -> Iterator[tuple[str, int]]:
    port = free_port()
    extra = ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])] if tls else []
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway",
            "sandbox",
            "--db",
            str(db),
            "--demo",
            "0",
            "--api-key",
            API_KEY,
            "--port",
            str(port),
            *extra,
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    try:
        wait_http(url + "/civicrm/ajax/rest", proc, verify=str(tls[0]) if tls else True)
        yield url, proc.pid
    finally:
        stop(proc)


@contextlib.contextmanager
def gateway(upstream_url: str, **env: str) -> Iterator[tuple[str, int]]:
    port = free_port()
    full = {k: v for k, v in os.environ.items() if not k.startswith("CIVI_GATEWAY_")}
    full.update(
        {
            "CIVI_GATEWAY_BACKEND": "http",
            "CIVI_GATEWAY_HTTP_URL": upstream_url,
            "CIVI_GATEWAY_HTTP_API_KEY": API_KEY,
            "CIVI_GATEWAY_PORT": str(port),
            "CIVI_GATEWAY_LOG_LEVEL": "warning",
            "CIVI_GATEWAY_HTTP_TIMEOUT": "300",
            "CIVI_GATEWAY_CLIENT_CONCURRENCY": "1000",
            "CIVI_GATEWAY_SECRETS_DIR": "/nonexistent",
            **env,
        }
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve"],
        cwd=ROOT,
        env=full,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/healthz", proc)
        yield url, proc.pid
    finally:
        stop(proc)


def rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms"


# --- (a) -----------------------------------------------------------------------------------------


def _http_client_calls(gw: str, n: int) -> float:
    """``n`` calls through the gateway on one kept-alive stdlib ``http.client`` connection."""
    import http.client

    body = orjson.dumps(PARAMS)
    conn = http.client.HTTPConnection(gw.split("//", 1)[1])
    headers = {"Content-Type": "application/json"}
    try:
        conn.request("POST", "/v4/Contact/get", body, headers)
        conn.getresponse().read()
        start = time.perf_counter()
        for _ in range(n):
            conn.request("POST", "/v4/Contact/get", body, headers)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"gateway answered {response.status}")
        return time.perf_counter() - start
    finally:
        conn.close()


def bench_civicrmapi(up: str, gw: str, n: int, verify: str | bool = True) -> dict[str, float]:
    """civicrmapi straight to CiviCRM, then the same calls through the gateway from two
    clients: httpx, and the stdlib's http.client (much less Python per call)."""
    from civicrmapi.http import HttpApiV4

    api = HttpApiV4(up, API_KEY, verify_ssl=verify)
    api("Contact", "get", PARAMS)  # warm up
    start = time.perf_counter()
    for _ in range(n):
        api("Contact", "get", PARAMS)
    direct = time.perf_counter() - start
    with httpx.Client(base_url=gw) as client:
        client.post("/v4/Contact/get", json=PARAMS)
        start = time.perf_counter()
        for _ in range(n):
            client.post("/v4/Contact/get", json=PARAMS).raise_for_status()
        through = time.perf_counter() - start
    return {
        "civicrmapi_direct_s": direct,
        "gateway_httpx_s": through,
        "gateway_http_client_s": _http_client_calls(gw, n),
    }


def print_a(title: str, a: dict[str, float]) -> None:
    print(title)
    print(f"    civicrmapi HttpApiV4 direct      : {a['civicrmapi_direct_s']:.3f} s")
    for key, label in (
        ("gateway_httpx_s", "httpx client via gateway      "),
        ("gateway_http_client_s", "http.client via gateway       "),
    ):
        print(
            f"    {label}   : {a[key]:.3f} s  (civicrmapi/gateway {a['civicrmapi_direct_s'] / a[key]:.2f}x)"
        )


# --- (b) -----------------------------------------------------------------------------------------


class LeanConnection:
    """One kept-alive HTTP/1.1 connection on asyncio streams, doing no more than a call needs.

    httpx spends about a millisecond of Python on each call here; on two cores that CPU
    competes with the gateway and the upstream, and so inflates the gateway path's latency
    more than the direct one's. This client stands for a lean caller (curl, Go, a browser),
    so the figure is what the gateway itself adds."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        host, port = url.split("//", 1)[1].rsplit(":", 1)
        self.address = (host, int(port))
        self.head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, path: str, body: bytes, content_type: str) -> int:
        if self.streams is None:
            self.streams = await asyncio.open_connection(*self.address)
        reader, writer = self.streams
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {self.address[0]}\r\n{self.head}"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await reader.readexactly(length)
        return status

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()


async def _latencies(send, concurrency: int, per_worker: int) -> list[float]:
    """``send(worker)`` makes one call on that worker's connection and returns its status."""
    out: list[float] = []

    async def worker(index: int) -> None:
        for _ in range(per_worker):
            start = time.perf_counter()
            status = await send(index)
            if status != 200:
                raise RuntimeError(f"answered {status}")
            out.append(time.perf_counter() - start)

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return out


async def _paths(up: str, gw: str, concurrency: int, lean: bool):
    """The direct and the gateway call, each as ``send(worker) -> status``, and a closer."""
    headers = {"X-Civi-Auth": f"Bearer {API_KEY}", "X-Requested-With": "XMLHttpRequest"}
    form = {"params": orjson.dumps(PARAMS).decode()}
    direct_path = "/civicrm/ajax/api4/Contact/get"
    if lean:
        from urllib.parse import urlencode

        form_body, json_body = urlencode(form).encode(), orjson.dumps(PARAMS)
        direct = [LeanConnection(up, headers) for _ in range(concurrency)]
        through = [LeanConnection(gw, {}) for _ in range(concurrency)]

        async def send_direct(i: int) -> int:
            return await direct[i].post(direct_path, form_body, "application/x-www-form-urlencoded")

        async def send_through(i: int) -> int:
            return await through[i].post("/v4/Contact/get", json_body, "application/json")

        async def close() -> None:
            for conn in (*direct, *through):
                conn.close()

        return send_direct, send_through, close

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    d = httpx.AsyncClient(base_url=up, headers=headers, limits=limits)
    g = httpx.AsyncClient(base_url=gw, limits=limits)

    async def send_direct_httpx(_: int) -> int:
        return (await d.post(direct_path, data=form)).status_code

    async def send_through_httpx(_: int) -> int:
        return (await g.post("/v4/Contact/get", json=PARAMS)).status_code

    async def close_httpx() -> None:
        await d.aclose()
        await g.aclose()

    return send_direct_httpx, send_through_httpx, close_httpx


def cpu_ticks() -> tuple[int, int]:
    """The whole machine's (busy, total) jiffies, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


async def bench_added_latency(
    up: str, gw: str, concurrency: int, per_worker: int, lean: bool = False
) -> dict[str, float]:
    send_direct, send_through, close = await _paths(up, gw, concurrency, lean)
    result: dict[str, float] = {}
    try:
        for _ in range(2):  # warm both paths, interleaved rounds to share any drift
            await _latencies(send_direct, concurrency, 5)
            await _latencies(send_through, concurrency, 5)
        d: list[float] = []
        g: list[float] = []
        busy = {"direct": [0, 0], "gateway": [0, 0]}
        for _ in range(8):
            for name, send, out in (("direct", send_direct, d), ("gateway", send_through, g)):
                before = cpu_ticks()
                out += await _latencies(send, concurrency, per_worker // 8)
                after = cpu_ticks()
                busy[name][0] += after[0] - before[0]
                busy[name][1] += after[1] - before[1]
    finally:
        await close()
    for name, (used, total) in busy.items():
        result[f"{name}_cpu_busy"] = used / total if total else 0.0
    for q, name in ((0.5, "p50"), (0.99, "p99")):
        result[f"direct_{name}"] = pct(d, q)
        result[f"gateway_{name}"] = pct(g, q)
        result[f"added_{name}"] = pct(g, q) - pct(d, q)
    result["direct_mean"] = statistics.fmean(d)
    result["gateway_mean"] = statistics.fmean(g)
    return result


# --- (c) -----------------------------------------------------------------------------------------


def bench_big_get(up: str, mode: str, select: list[str], records: int) -> dict[str, float]:
    """``mode``: ``whole`` (a limit above the total: answered in one piece), ``json`` (a plain
    get: the gateway streams it as a JSON array) or ``ndjson``."""
    stream = mode == "ndjson"
    with gateway(up, CIVI_GATEWAY_EXPORT_PAGE_SIZE="5000") as (gw, pid):
        idle = rss_kib(pid, "VmRSS")
        size = 0
        rows = 0
        start = time.perf_counter()
        with httpx.Client(base_url=gw, timeout=300) as client:
            if stream:
                with client.stream(
                    "POST", "/v4/Contact/get", params={"format": "ndjson"}, json={"select": select}
                ) as response:
                    response.raise_for_status()
                    for chunk in response.iter_bytes():
                        size += len(chunk)
                        rows += chunk.count(b"\n")
            else:
                body: dict = {"select": select}
                if mode == "whole":
                    body["limit"] = records + 10
                response = client.post("/v4/Contact/get", json=body)
                response.raise_for_status()
                size = len(response.content)
                rows = len(orjson.loads(response.content))
        elapsed = time.perf_counter() - start
        peak = rss_kib(pid, "VmHWM")
    return {
        "rows": rows,
        "seconds": elapsed,
        "payload_mib": size / 2**20,
        "idle_rss_mib": idle / 1024,
        "peak_rss_mib": peak / 1024,
        "growth_mib": (peak - idle) / 1024,
    }


# --- (d) -----------------------------------------------------------------------------------------


def bench_batch(gw: str, n: int, rounds: int) -> dict[str, float]:
    calls = {
        f"c{i}": ["Contact", "get", {"select": ["id", "display_name"], "where": [["id", "=", 3 + i]]}]
        for i in range(n)
    }
    with httpx.Client(base_url=gw, timeout=60) as client:
        client.post("/v4/batch", json=calls).raise_for_status()
        singles = batch = 0.0
        for _ in range(rounds):
            start = time.perf_counter()
            for _, action, params in calls.values():
                client.post(f"/v4/Contact/{action}", json=params).raise_for_status()
            singles += time.perf_counter() - start
            start = time.perf_counter()
            answer = client.post("/v4/batch", json=calls)
            answer.raise_for_status()
            assert all(v["status"] == 200 for v in answer.json().values())
            batch += time.perf_counter() - start
    return {"singles_s": singles / rounds, "batch_s": batch / rounds}


def https_a(db: Path, tmp: Path, calls: int) -> None:
    """(a) again with CiviCRM behind HTTPS, as real sites are: civicrmapi opens (and
    handshakes) a connection per call, the gateway keeps its TLS connections."""
    cert, key = self_signed(tmp)
    with (
        upstream(db, (cert, key)) as (up, _),
        gateway(up, CIVI_GATEWAY_HTTP_CA_BUNDLE=str(cert)) as (gw, _pid),
    ):
        a = bench_civicrmapi(up, gw, calls, verify=str(cert))
    print_a(f"\n(a') the same with the upstream on HTTPS ({calls} calls)", a)


def run_b(up: str, gw: str, quick: bool) -> None:
    for lean in (False, True):
        client = "a lean asyncio client" if lean else "httpx"
        for conc, per in ((1, 800 if not quick else 160), (32, 40 if not quick else 16)):
            b = asyncio.run(bench_added_latency(up, gw, conc, per, lean))
            print(
                f"\n(b) added latency, {client} on both paths, concurrency {conc} "
                f"({conc * per} calls per path)"
            )
            print(f"    direct  p50 {ms(b['direct_p50'])}  p99 {ms(b['direct_p99'])}")
            print(f"    gateway p50 {ms(b['gateway_p50'])}  p99 {ms(b['gateway_p99'])}")
            print(f"    added   p50 {ms(b['added_p50'])}  p99 {ms(b['added_p99'])}")
            print(
                f"    machine CPU busy: direct {b['direct_cpu_busy']:.0%}, "
                f"gateway {b['gateway_cpu_busy']:.0%} (of {os.cpu_count()} cores)"
            )


def run_c(up: str, records: int) -> None:
    select = ["id", "display_name", "sort_name", "first_name", "last_name", "created_date"]
    labels = {
        "whole": "JSON with limit (buffered whole)",
        "json": "plain JSON get (streamed as an array)",
        "ndjson": "NDJSON stream",
    }
    for mode, label in labels.items():
        c = bench_big_get(up, mode, select, records)
        print(f"\n(c) get of all {c['rows']:,} contacts, {label}")
        print(f"    time {c['seconds']:.2f} s, payload {c['payload_mib']:.1f} MiB")
        print(
            f"    gateway RSS idle {c['idle_rss_mib']:.1f} MiB, peak "
            f"{c['peak_rss_mib']:.1f} MiB, growth {c['growth_mib']:.1f} MiB "
            f"({c['growth_mib'] / c['payload_mib']:.2f}x payload)"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=500, help="calls per path in (a)")
    parser.add_argument("--quick", action="store_true", help="smaller runs, for a smoke test")
    parser.add_argument("--parts", default="abcd", help="which parts to run, e.g. ab")
    args = parser.parse_args()
    if args.quick:
        args.records, args.calls = 5000, 100
    sys.path.insert(0, str(ROOT))
    from gateway.sandbox.bulk import seed_contacts
    from gateway.sandbox.engine import Sandbox

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "crm.sqlite"
        start = time.perf_counter()
        sandbox = Sandbox(str(db))
        seed_contacts(sandbox, args.records)
        sandbox.close()
        print(f"seeded {args.records:,} contacts in {time.perf_counter() - start:.2f} s")
        with upstream(db) as (up, _up_pid):
            with gateway(up) as (gw, _gw_pid):
                if "a" in args.parts:
                    a = bench_civicrmapi(up, gw, args.calls)
                    print_a(f"\n(a) {args.calls} Contact.get calls, sequential", a)
                    https_a(db, Path(tmp), args.calls)
                if "b" in args.parts:
                    run_b(up, gw, args.quick)
                if "d" in args.parts:
                    d = bench_batch(gw, 50, 5 if not args.quick else 2)
                    print("\n(d) 50 Contact.get calls")
                    print(f"    50 single calls : {d['singles_s'] * 1000:.1f} ms")
                    print(f"    one batch of 50 : {d['batch_s'] * 1000:.1f} ms")
                    print(f"    ratio           : {d['singles_s'] / d['batch_s']:.2f}x")
            if "c" in args.parts:
                run_c(up, args.records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
