"""Logging set-up: stdlib logging, text or JSON lines, every record passed through the redactor.

Both formats carry the same facts: a record's ``extra=`` fields (the access line's method, path,
status, duration, client and request id) are JSON members in one and ``key=value`` pairs in the
other. Any record logged while a request is being handled gets that request's id, whatever
logger wrote it. uvicorn's own access logger is silenced: the gateway writes one access line
per request itself (``gateway.access``).
"""

from __future__ import annotations

import logging
import re
import sys
import time
from contextvars import ContextVar
from typing import Any

import orjson

_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()) | {
    "message",
    "asctime",
    "taskName",
    # uvicorn's copy of a message with ANSI colour escapes: never wanted in a log file.
    "color_message",
}

# The id of the request being handled (set by the app's request-id middleware).
request_id_var: ContextVar[str | None] = ContextVar("civi_gateway_request_id", default=None)


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: value for key, value in vars(record).items() if key not in _RESERVED and not key.startswith("_")
    }


_second: list[Any] = [None, ""]  # the last second formatted, and its text


def _timestamp(record: logging.LogRecord) -> str:
    second = int(record.created)
    if _second[0] != second:  # formatted once a second, not once a line
        _second[:] = [second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))]
    return f"{_second[1]}.{int(record.msecs):03d}Z"


class RequestContextFilter(logging.Filter):
    """Adds the current request's id to records that do not name one."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            request_id = request_id_var.get()
            if request_id is not None:
                record.request_id = request_id
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with any ``extra=`` fields kept as members."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(_extras(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        return orjson.dumps(entry, default=str).decode()


_QUOTE = re.compile(r'[\s"=]')


def _text_value(value: Any) -> str:
    if value is None:
        return "-"
    text = str(value)
    if not text or _QUOTE.search(text):
        return orjson.dumps(text).decode()
    return text


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value ...``, the extras in the order they were given
    (less the access line's method, path and status, which its message already shows)."""

    _SHOWN_IN_MESSAGE = frozenset({"method", "path", "status"})

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {record.levelname} {record.name}: {record.getMessage()}"
        extras = {k: v for k, v in _extras(record).items() if k not in self._SHOWN_IN_MESSAGE}
        if extras:
            line += " " + " ".join(f"{key}={_text_value(value)}" for key, value in extras.items())
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + record.exc_text
        return line


def configure_logging(level: str, fmt: str) -> None:
    """Route gateway and uvicorn logs through one handler on stderr (masking is in redact.py)."""
    # Neither format shows a record's thread or process: not looked up for every record
    # (an access line a request, so this is on the hot path).
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RequestContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_civi_gateway", False):
            root.removeHandler(old)
    handler._civi_gateway = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # uvicorn writes its access line only when this logger has a handler somewhere up its
    # chain; with none, each request is logged once, by the gateway's own access line.
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False
