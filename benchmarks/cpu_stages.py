"""Where a call's CPU goes, stage by stage, in a real gateway process on the real CiviCRM kit.

Run by hand (not a test), with the kit running (``/tmp/civi/bin/start.sh``)::

    python -m benchmarks.cpu_stages                 # 3000 calls on the pipe backend
    python -m benchmarks.cpu_stages --calls 5000 --backend http

It starts ``civicrm-gateway serve`` on 127.0.0.1 through this module (``... cpu_stages serve``),
which first wraps the stages of a call (the ASGI server's request, each middleware, the route,
the flow's steps, the backend, the answer's shaping) in accumulators of the main thread's CPU
time, then serves as ``serve`` does. The driver sends the benchmark's call (``Contact.get`` of
25 Individuals, as in ``bench_real``) at concurrency 1, then asks the process for its figures
(SIGUSR1; SIGUSR2 zeroes them after the warm-up).

Each line is a stage's CPU per request, *inclusive* of the stages it calls (the server's request
includes everything below it). The wrappers cost a little each (two clock reads), so the sum of
the lines is a little over the process's own figure, printed first. CPU time rather than wall
time: a pipe write or a socket write that wakes the other side can lose the CPU for a while
(another process runs), which wall-clock profilers count to the write.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import importlib
import os
import runpy
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

# (module, attribute path, is a coroutine function): in the order a call meets them. Names a
# module imported from another are wrapped where they are looked up.
STAGES: list[tuple[str, str, bool]] = [
    ("uvicorn.protocols.http.httptools_impl", "HttpToolsProtocol.data_received", False),
    ("uvicorn.protocols.http.httptools_impl", "RequestResponseCycle.run_asgi", True),
    ("starlette.middleware.errors", "ServerErrorMiddleware.__call__", True),
    ("gateway.web.requestid", "RequestIdMiddleware.handle", True),
    ("gateway.web.accesslog", "AccessLogMiddleware.after", False),
    ("gateway.web.requestmetrics", "MetricsMiddleware.after", False),
    ("gateway.web.compression", "Compression.__call__", True),
    ("gateway.web.browsers", "BrowserGuard.__call__", True),
    ("gateway.web.routes.direct", "DirectCallMiddleware.__call__", True),
    ("gateway.web.routes.direct", "handle_call", True),
    ("gateway.web.routes.api", "credentials", False),
    ("gateway.web.routes.api", "origin", False),
    ("gateway.flow.flow", "CallFlow.call", True),
    ("gateway.flow.flow", "CallFlow.authenticate", True),
    ("gateway.flow.flow", "prepare_call", True),
    ("gateway.flow.prepare", "parse", False),
    ("gateway.flow.prepare", "_canonical_names", True),
    ("gateway.flow.prepare", "check_calls", False),
    ("gateway.core.fields", "references", True),
    ("gateway.flow.prepare", "check_policy", False),
    ("gateway.core.validate", "check", True),
    ("gateway.flow.prepare", "_without_credentials", True),
    ("gateway.flow.idempotency", "Idempotency.run", True),
    ("gateway.flow.flow", "CallFlow.records", True),
    ("gateway.backends.resilience", "ResilientBackend.call", True),
    ("gateway.backends.pipe", "PipeBackend.call", True),
    ("gateway.backends.pipeworker", "PipeWorker.rpc", True),
    ("gateway.backends.http", "HttpBackend.call", True),
    ("gateway.backends.httpclient", "PooledClient.post", True),
    ("aiohttp.connector", "BaseConnector.connect", True),
    ("aiohttp.client_reqrep", "ClientRequest.__init__", False),
    ("aiohttp.client_reqrep", "ClientRequest.send", True),
    ("aiohttp.client_reqrep", "ClientResponse.start", True),
    ("aiohttp.client_reqrep", "ClientResponse.read", True),
    ("gateway.backends.http", "v4_records", False),
    ("gateway.flow.flow", "shape_result", False),
    ("gateway.flow.prepare", "check_answer", False),
    ("gateway.flow.prepare", "response_body", False),
    ("gateway.web.calls", "to_response", False),
    ("starlette.responses", "Response.__call__", True),
]
SERVER = "RequestResponseCycle.run_asgi"
ROOT = str(Path(__file__).resolve().parent.parent)  # the gateway process imports this module
PARAMS: dict[str, Any] = {
    "select": ["id", "display_name", "email_primary.email"],
    "where": [["contact_type", "=", "Individual"]],
    "orderBy": {"id": "ASC"},
    "limit": 25,
}


def label(module: str, path: str) -> str:
    """A stage's name as printed: a function's with its module's (``validate.check``)."""
    return path if "." in path else f"{module.rsplit('.', 1)[-1]}.{path}"


# --- inside the gateway process ----------------------------------------------------------------


def _serve() -> None:
    """Wrap the stages, then run ``civicrm-gateway serve``; the figures go to ``$CPU_STAGES_OUT``."""
    spent: dict[str, float] = collections.defaultdict(float)
    count: collections.Counter[str] = collections.Counter()
    clock = time.thread_time
    started = [clock()]

    def wrapped(name: str, fn: Callable[..., Any], is_async: bool) -> Callable[..., Any]:
        if is_async:

            @functools.wraps(fn)
            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                t0 = clock()
                try:
                    return await fn(*args, **kwargs)
                finally:
                    spent[name] += clock() - t0
                    count[name] += 1

            return timed_async

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += clock() - t0
                count[name] += 1

        return timed

    for module, path, is_async in STAGES:
        try:
            owner: Any = importlib.import_module(module)
        except ImportError:
            continue
        *parents, attribute = path.split(".")
        for parent in parents:
            owner = getattr(owner, parent)
        if hasattr(owner, attribute):
            setattr(owner, attribute, wrapped(label(module, path), getattr(owner, attribute), is_async))

    def report(*_: Any) -> None:
        requests = count[SERVER] or 1
        lines = [f"{(clock() - started[0]) / requests * 1e6:.0f} {requests}"]
        lines += [f"{n}\t{spent[n] / requests * 1e6:.1f}\t{count[n] / requests:.2f}" for n in spent]
        Path(os.environ["CPU_STAGES_OUT"]).write_text("\n".join(lines) + "\n")

    def reset(*_: Any) -> None:
        spent.clear()
        count.clear()
        started[0] = clock()

    signal.signal(signal.SIGUSR1, report)
    signal.signal(signal.SIGUSR2, reset)
    sys.argv = ["civicrm-gateway", "serve"]
    runpy.run_module("gateway", run_name="__main__")


# --- the driver --------------------------------------------------------------------------------


async def _drive(args: argparse.Namespace) -> None:
    from benchmarks.bench_real import cpu_seconds, http_sender
    from tests.conftest import GatewayProcess
    from tests.real.conftest import gateway_env
    from tests.real.kit import ENV, find_kit

    os.environ[ENV] = args.civi
    kit = find_kit()
    if kit is None:
        raise SystemExit(f"no kit at {args.civi}")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "stages.txt"
        env = gateway_env(kit, args.backend, "admin", CIVI_GATEWAY_LOG_LEVEL="info", CPU_STAGES_OUT=str(out))
        env.pop("CIVI_GATEWAY_EXPORT_PAGE_SIZE", None)
        env["PYTHONPATH"] = os.pathsep.join([ROOT, *filter(None, [os.environ.get("PYTHONPATH")])])
        process = GatewayProcess(env, Path(tmp), module="benchmarks.cpu_stages")
        try:
            process.wait_ready(timeout=120)
            send, close = http_sender(
                process.url, "/v4/Contact/get", orjson.dumps(PARAMS), "application/json", {}, 1
            )
            try:
                for _ in range(200):
                    await send(0)
                os.kill(process.proc.pid, signal.SIGUSR2)
                await asyncio.sleep(0.2)
                before = cpu_seconds(process.proc.pid)
                for _ in range(args.calls):
                    await send(0)
                spent = cpu_seconds(process.proc.pid) - before
                os.kill(process.proc.pid, signal.SIGUSR1)
                for _ in range(50):
                    await asyncio.sleep(0.1)
                    if out.exists():
                        break
            finally:
                close()
        finally:
            process.stop()
        head, *rows = out.read_text().splitlines()
        order = {label(module, path): i for i, (module, path, _) in enumerate(STAGES)}
        print(
            f"{args.backend} backend, {args.calls} calls at concurrency 1, load average "
            f"{os.getloadavg()[0]:.2f}: the process {spent / args.calls * 1e6:.0f} us of CPU a call "
            f"(its main thread {head.split()[0]} us)"
        )
        print(f"{'us/call':>8} {'times':>6}  stage (inclusive)")
        for row in sorted(rows, key=lambda r: order.get(r.split("\t")[0], 99)):
            name, micros, times = row.split("\t")
            print(f"{float(micros):>8.1f} {float(times):>6.2f}  {name}")


def main() -> None:
    if sys.argv[1:2] == ["serve"]:
        _serve()
        return
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--civi", default=os.environ.get("CIVI_GATEWAY_TEST_CIVICRM", "/tmp/civi"))
    parser.add_argument("--backend", choices=("pipe", "http", "cv"), default="pipe")
    parser.add_argument("--calls", type=int, default=3000)
    asyncio.run(_drive(parser.parse_args()))


if __name__ == "__main__":
    main()
