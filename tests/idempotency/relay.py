"""A ChaosProxy that decides per HTTP request (not per connection): pass it on, hold it until
the test opens a gate, or pass it on and then cut the answer (CiviCRM has committed, the
gateway never hears back). The gateway keeps its connections to CiviCRM open, so a per-
connection mode would miss requests on a pooled connection."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Callable

from tests.production.chaos import ChaosProxy


async def read_message(reader: asyncio.StreamReader) -> bytes:
    """One HTTP/1.1 message with a Content-Length body (all the gateway and the sandbox's
    wire server send); b"" at the end of the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return b""
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
        elif name.strip().lower() == b"transfer-encoding":
            raise AssertionError("chunked messages are not relayed")
    return head + await reader.readexactly(length)


class Relay(ChaosProxy):
    def __init__(self, target_port: int) -> None:
        super().__init__(target_port)
        # What to do with a request, from its bytes: "pass", "hold" or "cut".
        self.decide: Callable[[bytes], str] = lambda request: "pass"
        self.held = threading.Event()  # a request is being held
        self.gate = threading.Event()  # let held requests through
        self.answered = threading.Event()  # CiviCRM answered a held request

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        try:
            while request := await read_message(reader):
                action = self.decide(request)
                if action == "hold":
                    self.held.set()
                    await asyncio.get_running_loop().run_in_executor(None, self.gate.wait, 30)
                up_writer.write(request)
                await up_writer.drain()
                answer = await read_message(up_reader)
                if action == "hold":
                    self.answered.set()
                if action == "cut":  # CiviCRM answered; the gateway gets a reset instead
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.transport.abort()
                    return
                writer.write(answer)
                await writer.drain()
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            up_writer.close()
            with contextlib.suppress(Exception):
                writer.close()
