"""Dockerfile and .dockerignore: hadolint, structure, settings names, the HEALTHCHECK command."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.cli.main import build_parser
from tests.conftest import free_port
from tests.deploy.conftest import ROOT, project_tool, settings_env_names
from tests.deploy.helpers import CV_DOCKERFILE, DOCKERFILE, instructions, stages


def lint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [project_tool("hadolint"), "--no-color", str(path)], capture_output=True, text=True, timeout=60
    )


def stage_chain(all_stages: list[dict], stage: dict) -> list[dict]:
    """The stage and the stages it is built FROM, nearest first."""
    by_name = {s["name"]: s for s in all_stages if s["name"]}
    chain = [stage]
    while chain[-1]["base"] in by_name:
        chain.append(by_name[chain[-1]["base"]])
    return chain


def merged(chain: list[dict], keyword: str) -> list[str]:
    return [args for stage in reversed(chain) for kw, args in stage["body"] if kw == keyword]


def env_names(chain: list[dict]) -> dict[str, str]:
    names = {}
    for args in merged(chain, "ENV"):
        for token in shlex.split(args):
            key, sep, value = token.partition("=")
            if sep:
                names[key] = value
    return names


TEXT = DOCKERFILE.read_text()
STAGES = stages(TEXT)
FINAL = STAGES[-1]
RUNTIME_STAGES = [s for s in STAGES if s["name"] == "runtime"] + [FINAL]
CV_STAGES = stages(CV_DOCKERFILE.read_text())


@pytest.mark.parametrize("path", [DOCKERFILE, CV_DOCKERFILE], ids=["Dockerfile", "cv.Dockerfile"])
def test_hadolint_passes(path):
    result = lint(path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_broken_dockerfile(tmp_path):
    broken = tmp_path / "Dockerfile"
    broken.write_text(TEXT.replace("USER 10001:10001", "USER root\nRUN apt-get install gcc"))
    result = lint(broken)
    assert result.returncode != 0
    assert "DL3008" in result.stdout  # apt-get install without pinned versions
    assert "DL3002" in result.stdout  # last USER is root


def test_multi_stage_with_slim_python_base():
    assert [s["name"] for s in STAGES] == ["build", "runtime"]
    arg = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", TEXT, re.M)
    assert arg and re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", arg.group(1))
    for stage in STAGES:
        assert stage["base"] == "${PYTHON_IMAGE}"


def test_default_build_needs_no_image_but_the_base():
    """Issue 19.7: the classic builder builds every stage up to the target, so the default
    (last) stage is the gateway and no stage pulls anything else; no `# syntax=` line, which
    makes BuildKit fetch a frontend image."""
    assert FINAL["name"] == "runtime"
    assert not re.search(r"^#\s*syntax\s*=", TEXT, re.M | re.I)
    assert {s["base"] for s in STAGES} == {"${PYTHON_IMAGE}"}


def test_offline_build_from_a_wheelhouse():
    """With wheels in deploy/docker/wheelhouse/ pip uses them only; without, PyPI."""
    build_stage = next(s for s in STAGES if s["name"] == "build")
    assert ("COPY", "deploy/docker/wheelhouse/ /wheelhouse/") in build_stage["body"]
    run = " ".join(args for kw, args in build_stage["body"] if kw == "RUN")
    assert "if ls /wheelhouse/*.whl" in run and "PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheelhouse" in run
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "deploy/docker/wheelhouse/x-1.0-py3-none-any.whl"], cwd=ROOT, timeout=30
    )
    assert ignored.returncode == 0, "wheels must stay out of git"


def test_working_directory_is_not_writable_by_the_gateway_user():
    """Issue 19.5: the gateway reads `.env` from its working directory; /tmp would let anyone
    plant one. The venv folder is root's (copied in before USER)."""
    workdirs = merged(stage_chain(STAGES, FINAL), "WORKDIR")
    assert workdirs == ["/opt/civicrm-gateway"]


def test_final_and_cv_stages_run_as_non_root_user():
    for stage in RUNTIME_STAGES:
        users = merged(stage_chain(STAGES, stage), "USER")
        assert users, f"stage {stage['name']} sets no USER"
        user = users[-1].split(":")[0]
        assert user not in ("root", "0") and user.isdigit(), users[-1]


def test_no_build_tools_in_the_runtime_image():
    for stage in RUNTIME_STAGES:
        runs = " ".join(merged(stage_chain(STAGES, stage), "RUN"))
        assert not re.search(r"\b(gcc|g\+\+|make|build-essential|apt-get install|pip install)\b", runs), runs
        copies = merged(stage_chain(STAGES, stage), "COPY")
        # only the built venv and the docker CLI binary come from other stages, no source tree
        assert all("--from=" in c for c in copies), copies
    build_runs = " ".join(merged([s for s in STAGES if s["name"] == "build"], "RUN"))
    assert "pip wheel" in build_runs and ".whl" in build_runs


def test_healthcheck_probes_healthz_and_entrypoint_serves():
    chain = stage_chain(STAGES, FINAL)
    health = merged(chain, "HEALTHCHECK")
    assert len(health) == 1 and "/healthz" in health[0]
    entry = json.loads(merged(chain, "ENTRYPOINT")[-1])
    cmd = json.loads(merged(chain, "CMD")[-1])
    assert entry == ["civicrm-gateway"] and cmd == ["serve"]
    assert build_parser().parse_args(cmd).command == "serve"
    assert merged(chain, "EXPOSE") == [env_names(chain)["CIVI_GATEWAY_PORT"]]


def test_env_names_exist_in_settings_and_hold_no_secrets():
    known = settings_env_names()
    for stage in RUNTIME_STAGES:
        env = env_names(stage_chain(STAGES, stage))
        gateway_env = {k: v for k, v in env.items() if k.startswith("CIVI_GATEWAY_")}
        assert set(gateway_env) <= known, set(gateway_env) - known
        assert gateway_env["CIVI_GATEWAY_HOST"] == "0.0.0.0"
        assert "CIVI_GATEWAY_WORKERS" in gateway_env  # configurable, with a stated default
        for name in gateway_env:
            assert not re.search(r"KEY|TOKEN|PASSWORD|SECRET", name), name
    assert "ARG" not in {kw for kw, args in instructions(TEXT) if re.search(r"KEY|TOKEN|PASSW", args)}


def test_cv_image_adds_only_the_docker_client_to_the_gateway_image():
    assert [(s["name"], s["base"]) for s in CV_STAGES] == [
        ("docker-cli", "${DOCKER_CLI_IMAGE}"),
        ("cv", "${GATEWAY_IMAGE}"),
    ]
    cv = CV_STAGES[-1]
    # no USER: it keeps the gateway image's unprivileged user
    assert cv["body"] == [("COPY", "--from=docker-cli /usr/local/bin/docker /usr/local/bin/docker")]
    cli = re.search(r"^ARG DOCKER_CLI_IMAGE=(\S+)$", CV_DOCKERFILE.read_text(), re.M)
    assert cli and re.fullmatch(r"docker:\d+(\.\d+)*-cli", cli.group(1))


def test_dockerignore_sends_only_what_the_build_copies():
    lines = [
        ln
        for ln in (ROOT / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    copied = set()
    for stage in STAGES:
        for kw, args in stage["body"]:
            if kw == "COPY" and "--from=" not in args:
                copied.update(p.rstrip("/") for p in args.split()[:-1])
    assert copied and copied <= allowed, copied - allowed
    for path in copied:
        assert (ROOT / path).exists(), path


@pytest.mark.slow
def test_healthcheck_command_works_against_a_real_gateway():
    chain = stage_chain(STAGES, FINAL)
    argv = json.loads(re.search(r"CMD (\[.*\])", merged(chain, "HEALTHCHECK")[0]).group(1))
    assert argv[0] == "python"
    argv[0] = sys.executable
    port = free_port()
    env = {
        **os.environ,
        "CIVI_GATEWAY_PORT": str(port),
        "CIVI_GATEWAY_HOST": "127.0.0.1",
        "CIVI_GATEWAY_BACKEND": "sandbox",
        "CIVI_GATEWAY_SANDBOX_DEMO": "0",
        "CIVI_GATEWAY_SECRETS_DIR": "",
    }
    # nothing listening yet: the health check fails
    assert subprocess.run(argv, env=env, capture_output=True, timeout=30).returncode != 0
    server = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            result = subprocess.run(argv, env=env, capture_output=True, timeout=30)
            if result.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert result.returncode == 0, result.stderr
    finally:
        server.terminate()
        server.wait(timeout=30)
