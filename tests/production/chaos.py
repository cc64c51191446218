"""A TCP proxy in front of the upstream that misbehaves on demand: it can go down (refuse
connections), reset connections, answer bytes that are not HTTP, or stall; or let a request
reach the upstream and then lose its answer (cut the connection, or send nothing back)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading

from tests.conftest import free_port


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), as a crashed peer or a middlebox would."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class ChaosProxy:
    """``pass`` forwards; ``down`` refuses connections; ``reset``, ``garbage`` and ``slow`` act
    before anything reaches the upstream; ``cut-answer`` and ``drop-answer`` forward the request
    and, once the upstream's answer starts, reset the client's connection or send it nothing.
    ``forwarded`` counts the connections opened to the upstream."""

    MODES = ("pass", "down", "reset", "garbage", "slow", "cut-answer", "drop-answer")

    def __init__(self, target_port: int, slow_seconds: float = 3.0) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.mode = "pass"
        self.slow_seconds = slow_seconds
        self.forwarded = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self, coro) -> None:  # type: ignore[no-untyped-def]
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    def start(self) -> ChaosProxy:
        self._thread.start()
        self._run(self._listen())
        return self

    def set(self, mode: str) -> None:
        """Switch mode; connections open now are cut (as a restarted upstream would)."""
        assert mode in self.MODES
        self._run(self._switch(mode))

    def stop(self) -> None:
        self._run(self._switch("down"))
        self._run(self._cancel_all())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    async def _cancel_all(self) -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

    async def _switch(self, mode: str) -> None:
        self.mode = mode
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()
        if mode == "down" and self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        elif mode != "down" and self._server is None:
            await self._listen()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        mode = self.mode
        self._writers.add(writer)
        try:
            if mode == "reset":
                await reader.read(65536)
                _reset(writer)
                return
            if mode == "garbage":
                await reader.read(65536)
                writer.write(b"\x00\x13this is not HTTP\r\n\r\n\xff\xfe")
                await writer.drain()
                return
            if mode == "slow":
                await asyncio.sleep(self.slow_seconds)
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            self.forwarded += 1
            self._writers.add(up_writer)
            answer = (
                self._pipe(up_reader, writer)
                if mode not in ("cut-answer", "drop-answer")
                else self._lose_answer(up_reader, writer, cut=mode == "cut-answer")
            )
            await asyncio.gather(self._pipe(reader, up_writer), answer)
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    @staticmethod
    async def _lose_answer(
        up_reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, cut: bool
    ) -> None:
        """The upstream's answer starting means it ran the call; the client never gets it."""
        with contextlib.suppress(ConnectionError, OSError):
            if await up_reader.read(65536) and cut:
                _reset(writer)
                return
            while await up_reader.read(65536):
                pass

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()
