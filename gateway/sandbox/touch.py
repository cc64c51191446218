"""Which (entity, field) pairs a call touched: recorded by the query compiler and the write
paths, read by tests (the access policy's property test checks that the gateway never lets a
call touch a field the client's policy does not allow).

    with recording() as touched:
        sandbox.api4("Contact", "get", {"select": ["UPPER(last_name) AS x"]})
    assert ("Contact", "last_name") in touched

The set lives in a context variable: a call run in a worker thread (``asyncio.to_thread``,
``anyio.to_thread.run_sync``) copies the context, so it adds to the same set object. A server
running in a thread of its own (the wire app under uvicorn in a test's thread) does not share
the test's context: ``recording(everywhere=True)`` also collects what any thread touches while
the block is open. When nothing records, ``touch`` is one context-variable read and one list
test.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

Touched = set[tuple[str, str]]
_current: ContextVar[Touched | None] = ContextVar("sandbox_touched", default=None)
_everywhere: list[Touched] = []  # sets of open recording(everywhere=True) blocks
_lock = threading.Lock()


@contextmanager
def recording(*, everywhere: bool = False) -> Iterator[Touched]:
    """Record every (entity, field) the sandbox resolves inside the block: in this context
    (and the worker threads it hands calls to), or with ``everywhere`` in any thread. Blocks
    nest: an inner block records into its own set, the outer one sees nothing of it."""
    touched: Touched = set()
    token = _current.set(touched)
    if everywhere:
        with _lock:
            _everywhere.append(touched)
    try:
        yield touched
    finally:
        _current.reset(token)
        if everywhere:
            with _lock:
                _everywhere.remove(touched)


def touch(entity: str, field: str) -> None:
    touched = _current.get()
    if touched is not None:
        touched.add((entity, field))
    if _everywhere:
        with _lock:
            for other in _everywhere:
                if other is not touched:
                    other.add((entity, field))


def active() -> bool:
    """True inside ``recording()``: lets callers skip work that only feeds the record."""
    return _current.get() is not None or bool(_everywhere)
