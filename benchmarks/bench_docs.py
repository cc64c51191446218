"""Benchmark: the API documents of a site with many entities (150 by default, a spec file of
the sandbox's entities cloned, like a real CiviCRM's count).

Run by hand (not a test; needs Debian's chromium and chromium-driver, and selenium)::

    python -m benchmarks.bench_docs                 # 150 entities, 3 cold page loads
    python -m benchmarks.bench_docs --entities 300 --runs 5

Prints:
- how long the gateway took to build its documents in the background after start-up;
- ``/openapi.json`` (gzipped) once built: median and worst of 20 requests, and its size;
- ``/docs`` in a fresh headless Chromium each run: milliseconds from navigation start until
  the first entity's operations are on screen (target: under 3 s);
- ``/redoc`` the same way (it also opens on one entity's document);
- the same page on the whole document at once (what it did before per-entity documents).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from tests.conftest import GatewayProcess
from tests.openapi import browser
from tests.openapi.bigsite import write_big_spec

FIRST_OPERATION = "#operations-Contact-Contact_create"
FIRST_REDOC_OPERATION = "[data-section-id='tag/Contact/operation/Contact_create']"


def _time_page(url: str, css: str, *, whole: bool = False) -> float:
    """Milliseconds from navigation start until ``css`` is on screen, in a fresh browser."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    with browser.chromium() as driver:
        driver.get(url)
        if whole:  # switch to the whole document, and time from there
            WebDriverWait(driver, 120).until(lambda d: d.find_elements(By.ID, "cgw-document"))
            started = driver.execute_script("return performance.now()")
            Select(driver.find_element(By.ID, "cgw-document")).select_by_index(
                len(Select(driver.find_element(By.ID, "cgw-document")).options) - 1
            )
        else:
            started = 0.0
        WebDriverWait(driver, 120).until(lambda d: d.find_elements(By.CSS_SELECTOR, css))
        return float(driver.execute_script("return performance.now()")) - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entities", type=int, default=150)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-whole", action="store_true", help="not the whole document at once")
    args = parser.parse_args()
    reason = browser.missing()
    if reason:
        raise SystemExit(f"bench_docs: {reason}")

    with tempfile.TemporaryDirectory() as folder:
        spec = Path(folder) / "spec.json"
        write_big_spec(spec, args.entities)
        started = time.perf_counter()
        proc = GatewayProcess(
            {
                "CIVI_GATEWAY_BACKEND": "sandbox",
                "CIVI_GATEWAY_SANDBOX_DEMO": "0",
                "CIVI_GATEWAY_OPENAPI_SPEC_FILE": str(spec),
                "CIVI_GATEWAY_OPENAPI_PREBUILD": "true",
                "CIVI_GATEWAY_LOG_LEVEL": "info",
            },
            Path(folder),
        )
        try:
            proc.wait_ready(timeout=60)
            ready = time.perf_counter() - started
            with httpx.Client(base_url=proc.url, timeout=120, headers={"Accept-Encoding": "gzip"}) as client:
                while "document(s) built in the background" not in proc.log.read_text():
                    time.sleep(0.05)
                built = time.perf_counter() - started
                timings, size, packed = [], 0, 0
                for _ in range(20):
                    t0 = time.perf_counter()
                    response = client.get("/openapi.json")
                    timings.append((time.perf_counter() - t0) * 1000)
                    size = len(response.content)
                    packed = int(response.headers.get("content-length", 0))
            print(
                f"{args.entities} entities: ready {ready:.1f} s after start, documents built "
                f"{built:.1f} s after start"
            )
            print(
                f"/openapi.json gzipped: median {statistics.median(timings):.1f} ms, worst "
                f"{max(timings):.1f} ms; {size / 1e6:.1f} MB, {packed / 1e3:.0f} kB on the wire"
            )
            pages = [_time_page(proc.url + "/docs", FIRST_OPERATION) for _ in range(args.runs)]
            print(
                f"/docs, first entity on screen (cold browser, {args.runs} runs): median "
                f"{statistics.median(pages):.0f} ms, worst {max(pages):.0f} ms"
            )
            pages = [_time_page(proc.url + "/redoc", FIRST_REDOC_OPERATION) for _ in range(args.runs)]
            print(
                f"/redoc, first entity on screen (cold browser, {args.runs} runs): median "
                f"{statistics.median(pages):.0f} ms, worst {max(pages):.0f} ms"
            )
            if args.skip_whole:
                return
            try:
                whole = _time_page(proc.url + "/docs", ".opblock-tag", whole=True)
                print(f"/docs on the whole document at once: {whole:.0f} ms")
            except Exception as exc:  # a page busy for minutes times the browser driver out
                print(f"/docs on the whole document at once: no render in time ({type(exc).__name__})")
        finally:
            proc.stop()


if __name__ == "__main__":
    main()
