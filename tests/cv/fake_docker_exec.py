"""Runs a command the way ``docker exec -i CONTAINER ...`` does, for tests without Docker.

The command starts in a session of its own (as a process inside a container is outside the
caller's process group), and this process only relays stdin, stdout and stderr and exits with
its exit code. Killing this process (even its whole group) therefore leaves the command
running, its stdin closed: exactly what a killed ``docker exec`` leaves in the container.

``FAKE_DOCKER_DOWN=<path>``: while that file exists, fail as ``docker exec`` does on a stopped
container (the daemon's message on stderr, exit 1) without running anything.

Usage: ``python fake_docker_exec.py COMMAND [ARG...]``
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from typing import BinaryIO


def pump(source: BinaryIO, target: BinaryIO | None, *, close: bool) -> None:
    while True:
        chunk = source.read1(65536) if hasattr(source, "read1") else source.read(65536)
        if not chunk:
            break
        if target is None:
            continue
        try:
            target.write(chunk)
            target.flush()
        except (BrokenPipeError, ValueError):
            target = None
    if close and target is not None:
        try:
            target.close()
        except BrokenPipeError:
            pass


def main() -> int:
    down = os.environ.get("FAKE_DOCKER_DOWN")
    if down and os.path.exists(down):
        sys.stderr.write(
            "Error response from daemon: container 3f2a9c1d7e6b4a5f8c0d2e1f3a4b5c6d"
            "7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b is not running\n"
        )
        return 1
    proc = subprocess.Popen(
        sys.argv[1:],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdin and proc.stdout and proc.stderr
    threads = [
        threading.Thread(
            target=pump, args=(sys.stdin.buffer, proc.stdin), kwargs={"close": True}, daemon=True
        ),
        threading.Thread(target=pump, args=(proc.stdout, sys.stdout.buffer), kwargs={"close": False}),
        threading.Thread(target=pump, args=(proc.stderr, sys.stderr.buffer), kwargs={"close": False}),
    ]
    for thread in threads:
        thread.start()
    code = proc.wait()
    for thread in threads[1:]:
        thread.join()
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
