"""The ``cv`` backend: one ``cv api4`` / ``cv api3`` process per call.

Each call runs ``[*cv_context, *cv_command, --cwd=..., api4, --in=json, --out=json,
--user=..., --, Entity.action]`` as an argv list (never a shell), writes the params as JSON on
stdin and reads JSON from stdout. At most ``cv_concurrency`` processes run at once; a process
that outlives ``cv_timeout`` is killed with its whole process group and reaped.

Permissions: ``cv api4`` runs with ``checkPermissions: false`` unless told otherwise, so when
``cv_check_permissions`` is on (the default) the gateway passes ``--user=<cv_user>`` and sets
``checkPermissions: true`` (APIv3: ``check_permissions: 1``) in every call's params, whatever
the client sent.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import TYPE_CHECKING, Any

import orjson

from gateway.backends import rowcount
from gateway.backends.base import Backend
from gateway.backends.config import CvConfig
from gateway.backends.cvproc import (
    KILL_MARGIN,
    ProcessResult,
    check_names,
    check_user,
    command_prefix,
    describe_output,
    extract_json,
    failure_from_stderr,
    run_process,
    v3_result,
    v4_result,
)
from gateway.core.call import Call
from gateway.core.errors import GatewayError
from gateway.core.results import Records

if TYPE_CHECKING:
    from gateway.core.identity import Identity

log = logging.getLogger("gateway.cv")


def user_for(config: CvConfig, identity: Identity | None) -> str | None:
    """The CiviCRM user a call runs as: the client's own, else the gateway's ``cv_user``."""
    if identity is not None and identity.cv_user:
        return check_user(identity.cv_user)
    if identity is not None and identity.api_key:
        raise GatewayError(
            "gateway-misconfigured",
            "This client's CiviCRM identity is an API key, which the cv backend cannot use: "
            "give the client a cv_user instead.",
        )
    return check_user(config.cv_user) if config.cv_user else None


def with_permissions(config: CvConfig, version: int, params: dict[str, Any]) -> dict[str, Any]:
    """The call's params with the gateway's permission mode forced over the client's."""
    key = "checkPermissions" if version == 4 else "check_permissions"
    if config.cv_check_permissions:
        return {**params, key: True if version == 4 else 1}
    return {**params, key: False if version == 4 else 0}


def encode_params(params: dict[str, Any]) -> bytes:
    """Params as the JSON cv reads; refuses what JSON cannot carry (e.g. integers > 64 bit)."""
    try:
        return orjson.dumps(params)
    except orjson.JSONEncodeError as exc:
        raise GatewayError("invalid-request", f"The params cannot be sent to cv: {exc}.") from None


class CvBackend(Backend):
    name = "cv"

    def __init__(self, config: CvConfig) -> None:
        self.config = config
        self._prefix = command_prefix(config)
        self._context_len = len(config.cv_context)
        self._context_kill = bool(self._context_len) and config.cv_context_kill
        # For the 504's wording: None (local), True (killed there too), False (context only).
        self._remote = self._context_kill if self._context_len else None
        self._slots = asyncio.Semaphore(config.cv_concurrency)
        self._running = 0
        self._queued = 0
        self.calls = 0

    def argv(self, version: int, entity: str, action: str, user: str | None) -> list[str]:
        argv = [*self._prefix, "api4" if version == 4 else "api3", "--in=json", "--out=json"]
        if user:
            argv.append(f"--user={user}")
        return [*argv, "--", f"{entity}.{action}"]

    async def call(self, call: Call, *, identity: Identity | None = None) -> Records:
        version, entity, action = call.version, call.entity, call.action
        check_names(entity, action)  # they go on cv's command line
        if version not in (3, 4):
            raise GatewayError("invalid-request", f"Unknown API version {version}.")
        user = user_for(self.config, identity)
        argv = self.argv(version, entity, action, user)
        count_plan = rowcount.plan(call)
        queries = (
            [call.to_params()]
            if count_plan is None
            else [q for q in (count_plan.records, count_plan.count) if q is not None]
        )
        stdins = [encode_params(with_permissions(self.config, version, q)) for q in queries]
        timeout = self.config.cv_timeout
        deadline = asyncio.get_running_loop().time() + timeout
        self._queued += 1
        try:
            # Waiting for a slot counts against the same limit: a caller never waits forever.
            async with asyncio.timeout_at(deadline):
                await self._slots.acquire()
        except TimeoutError:
            raise GatewayError(
                "upstream-timeout",
                f"No cv slot became free within {timeout:g} s "
                f"({self.config.cv_concurrency} cv processes busy).",
            ) from None
        finally:
            self._queued -= 1
        self._running += 1
        try:
            # The records, then the count, one after the other in the same slot: a call never
            # runs more cv processes at once than cv_concurrency allows.
            answers = []
            for stdin in stdins:
                left = deadline - asyncio.get_running_loop().time()
                result = await run_process(
                    self._bounded(argv, left), stdin, left, remote=self._remote, configured=timeout
                )
                answers.append(self._records(version, action, result))
        finally:
            self._running -= 1
            self._slots.release()
        self.calls += 1
        if count_plan is None:
            return answers[0]
        records = answers[0] if count_plan.records is not None else None
        return rowcount.combine(count_plan, records, answers[-1])

    def _bounded(self, argv: list[str], limit: float) -> list[str]:
        """``argv`` with cv killed where it runs once ``limit`` has passed.

        Through a context (``docker exec``, ``ssh``) killing the local process leaves cv
        running on the other side: ``timeout -s KILL`` there ends it a moment after the
        gateway gave up (never before: the gateway answers 504 itself)."""
        if not self._context_kill:
            return argv
        seconds = max(1, math.ceil(limit + KILL_MARGIN))
        return [*argv[: self._context_len], "timeout", "-s", "KILL", str(seconds), *argv[self._context_len :]]

    def _records(self, version: int, action: str, result: ProcessResult) -> Records:
        stdout = result.stdout.decode("utf-8", "replace")
        if version == 3 and stdout.strip():
            # APIv3 prints its envelope on stdout, errors included (exit 1).
            try:
                data = extract_json(stdout)
            except ValueError:
                data = None
            if data is not None or result.returncode == 0:
                if data is None:
                    raise self._garbage(result.stdout)
                return v3_result(action, data)
        if result.returncode != 0:
            raise failure_from_stderr(result)
        try:
            data = extract_json(stdout)
        except ValueError:
            raise self._garbage(result.stdout) from None
        return v3_result(action, data) if version == 3 else v4_result(data)

    def stats(self) -> dict[str, float]:
        """Running and queued cv processes, for /metrics."""
        return {
            "concurrency": self.config.cv_concurrency,
            "busy": self._running,
            "queued": self._queued,
            "calls": self.calls,
        }

    @staticmethod
    def _garbage(stdout: bytes) -> GatewayError:
        log.warning("cv printed no JSON: %s", describe_output(stdout, 500))
        return GatewayError("upstream-invalid-response", "cv answered something that is not JSON.")
