"""Settings: environment, .env, secret files; failures name the variable to fix."""

import pytest

from gateway.settings import Settings, SettingsError, load_settings

pytestmark = pytest.mark.usefixtures("clean_env")


def test_defaults_are_the_sandbox_on_loopback():
    s = load_settings()
    assert s.backend == "sandbox" and s.host == "127.0.0.1" and s.port == 8000


def test_env_and_secret_values_hidden(monkeypatch):
    monkeypatch.setenv("CIVI_GATEWAY_BACKEND", "http")
    monkeypatch.setenv("CIVI_GATEWAY_HTTP_URL", "https://crm.example.org/")
    monkeypatch.setenv("CIVI_GATEWAY_HTTP_API_KEY", "s3cr3t-key-value")
    s = load_settings()
    assert s.http_url == "https://crm.example.org"
    assert s.http_api_key.get_secret_value() == "s3cr3t-key-value"
    assert "s3cr3t" not in repr(s) and "s3cr3t" not in str(s.model_dump())
    assert "s3cr3t-key-value" in s.secret_values


def test_secrets_dir(monkeypatch, tmp_path):
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "civi_gateway_http_api_key").write_text("from-a-file-123\n")
    monkeypatch.setenv("CIVI_GATEWAY_SECRETS_DIR", str(secrets))
    monkeypatch.setenv("CIVI_GATEWAY_BACKEND", "http")
    monkeypatch.setenv("CIVI_GATEWAY_HTTP_URL", "http://127.0.0.1:9")
    s = load_settings()
    assert s.http_api_key.get_secret_value().strip() == "from-a-file-123"


def test_dotenv(tmp_path):
    (tmp_path / ".env").write_text("CIVI_GATEWAY_PORT=8123\nCIVI_GATEWAY_LOG_LEVEL=debug\n")
    s = load_settings()
    assert s.port == 8123 and s.log_level == "debug"


@pytest.mark.parametrize(
    "env,needle",
    [
        ({"CIVI_GATEWAY_BACKEND": "http"}, "CIVI_GATEWAY_HTTP_URL"),
        ({"CIVI_GATEWAY_BACKEND": "http", "CIVI_GATEWAY_HTTP_URL": "http://x"}, "CIVI_GATEWAY_HTTP_API_KEY"),
        ({"CIVI_GATEWAY_HTTP_URL": "ftp://x"}, "CIVI_GATEWAY_HTTP_URL"),
        ({"CIVI_GATEWAY_PORT": "70000"}, "CIVI_GATEWAY_PORT"),
        ({"CIVI_GATEWAY_BACKEND": "nosuch"}, "CIVI_GATEWAY_BACKEND"),
        (
            {
                "CIVI_GATEWAY_BACKEND": "http",
                "CIVI_GATEWAY_HTTP_URL": "http://x",
                "CIVI_GATEWAY_HTTP_AUTH": "basic",
            },
            "CIVI_GATEWAY_HTTP_USERNAME",
        ),
        ({"CIVI_GATEWAY_BACKEND": "pipe"}, "CIVI_GATEWAY_CV_USER"),
    ],
)
def test_invalid_settings_name_the_variable(monkeypatch, env, needle):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert needle in str(info.value)


def test_invalid_secret_is_not_echoed(monkeypatch):
    monkeypatch.setenv("CIVI_GATEWAY_HTTP_URL", "not-a-url-with-s3cr3t")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "s3cr3t" not in str(info.value)


def test_settings_class_direct():
    assert Settings(backend="http", http_url="http://h", http_api_key="k" * 8).backend == "http"
