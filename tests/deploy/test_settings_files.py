"""Where settings come from on a deployed host: secret files the gateway's user cannot read, and
a `.env` in a directory anyone can write (issue 19, items 1 and 5)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.settings import load_settings

pytestmark = pytest.mark.usefixtures("clean_env")

NOBODY = 65534


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A folder other users may enter (pytest's tmp_path is root-only when tests run as root)."""
    path = Path(tempfile.mkdtemp(prefix="cgw-settings-"))
    path.chmod(0o755)
    yield path
    subprocess.run(["chmod", "-R", "u+rwx", str(path)], check=False)
    subprocess.run(["rm", "-rf", str(path)], check=False)


def serve_as_someone_else(secrets: Path) -> tuple[int, str, int, int]:
    """`civicrm-gateway serve` (its ``main``) as a user who cannot read what root made 0700/0600:
    as root, a forked child that becomes the user nobody (a fresh interpreter could not run as
    nobody when Python lives under /root); otherwise this user, the permissions taken away.
    Returns the exit code, stderr, the uid and the gid."""
    import uvicorn  # noqa: F401  (imported before the fork: the child may not read /root)

    from gateway.cli import main as cli

    uid = NOBODY if os.geteuid() == 0 else os.geteuid()
    gid = NOBODY if os.geteuid() == 0 else os.getegid()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.dup2(write_end, 2)
            sys.stderr = open(2, "w", closefd=False)  # pytest replaced sys.stderr
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
            os.chdir("/")
            for key in [k for k in os.environ if k.startswith("CIVI_GATEWAY_")]:
                del os.environ[key]
            os.environ.update(CIVI_GATEWAY_SECRETS_DIR=str(secrets), CIVI_GATEWAY_PORT="9")
            code = cli.main(["serve"])
        except BaseException:
            traceback.print_exc()  # what an uncaught error does to a real process
        finally:
            sys.stderr.flush()
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        stderr = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), stderr, uid, gid


def test_unreadable_secret_file_is_one_line_naming_the_file_and_uid(open_tmp):
    secrets = open_tmp / "secrets"
    secrets.mkdir(mode=0o755)
    token = secrets / "civi_gateway_client_tokens"
    token.write_text("app:sha256:" + "ab" * 32 + "\n")
    token.chmod(0o600 if os.geteuid() == 0 else 0)
    code, stderr, uid, gid = serve_as_someone_else(secrets)
    assert code == 2, stderr
    assert stderr.splitlines() == [
        f"civicrm-gateway: secret file {token} is not readable by uid {uid} (gid {gid}): "
        "the gateway's user must be able to read them (e.g. group-readable for its group, or "
        "compose/Kubernetes secrets); see docs/deploy.md"
    ]


def test_unreadable_secrets_directory_is_one_line_naming_the_folder(open_tmp):
    secrets = open_tmp / "secrets"
    secrets.mkdir()
    (secrets / "civi_gateway_http_api_key").write_text("k" * 40 + "\n")
    secrets.chmod(0o700 if os.geteuid() == 0 else 0)
    code, stderr, uid, gid = serve_as_someone_else(secrets)
    assert code == 2, stderr
    assert len(stderr.splitlines()) == 1, stderr
    assert stderr.startswith(
        f"civicrm-gateway: secrets directory {secrets} (CIVI_GATEWAY_SECRETS_DIR) is not readable"
        f" by uid {uid} (gid {gid}): "
    )


def test_readable_secret_files_still_load(open_tmp, monkeypatch):
    secrets = open_tmp / "secrets"
    secrets.mkdir()
    (secrets / "civi_gateway_client_tokens").write_text("app:sha256:" + "cd" * 32 + "\n")
    (secrets / "unrelated_file").write_text("x")
    (secrets / "unrelated_file").chmod(0)  # not a setting: never read, never checked
    monkeypatch.setenv("CIVI_GATEWAY_SECRETS_DIR", str(secrets))
    assert load_settings().client_tokens.get_secret_value().strip() == "app:sha256:" + "cd" * 32


def test_dotenv_in_a_world_writable_directory_is_ignored(open_tmp, monkeypatch, caplog):
    planted = open_tmp / "shared"
    planted.mkdir()
    planted.chmod(0o1777)  # like /tmp
    (planted / ".env").write_text("CIVI_GATEWAY_ALLOW_ANONYMOUS=true\nCIVI_GATEWAY_PORT=8123\n")
    monkeypatch.chdir(planted)
    settings = load_settings()
    assert settings.allow_anonymous is False and settings.port == 8000
    assert f"ignoring {planted / '.env'}: its directory is writable by every user" in caplog.text


def test_world_writable_dotenv_is_ignored(tmp_path, caplog):
    env_file = tmp_path / ".env"  # clean_env made tmp_path the working directory
    env_file.write_text("CIVI_GATEWAY_PORT=8123\n")
    env_file.chmod(0o666)
    assert load_settings().port == 8000
    assert "the file is writable by every user" in caplog.text
    env_file.chmod(0o644)
    assert load_settings().port == 8123  # the same file, once only its owner can write it
