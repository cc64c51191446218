"""``civicrm-gateway sandbox``: its start-up line names every entity it emulates, and they are
exactly what its Entity.get serves."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import httpx

from gateway.sandbox.schema import emulated_entities


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_startup_line_lists_the_emulated_entities() -> None:
    port = _free_port()
    key = "k" * 32
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway.cli.main",
            "sandbox",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--demo",
            "0",
            "--api-key",
            key,
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=dict(os.environ),
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        match = re.match(r"Sandbox CiviCRM at http://127\.0\.0\.1:\d+ emulating (.*) \(admin", line)
        assert match, line
        listed = match.group(1).split(", ")
        assert listed == emulated_entities()
        assert {"Contact", "OptionValue", "Participant", "Entity", "Setting"} <= set(listed)
        served = None
        for _ in range(400):  # until uvicorn listens (or the process dies)
            try:
                r = httpx.post(
                    f"http://127.0.0.1:{port}/civicrm/ajax/api4/Entity/get",
                    data={"params": '{"select":["name"]}'},
                    headers={"X-Civi-Auth": f"Bearer {key}", "X-Requested-With": "XMLHttpRequest"},
                    timeout=5,
                )
            except httpx.TransportError:
                try:
                    proc.wait(timeout=0.05)
                except subprocess.TimeoutExpired:
                    continue
                raise AssertionError(f"sandbox exited with {proc.returncode}") from None
            served = [v["name"] for v in r.json()["values"]]
            break
        assert served == listed
    finally:
        proc.terminate()
        proc.wait(timeout=10)
