"""The nginx TLS front: `nginx -t` where nginx is installed, and parsed checks everywhere."""

from __future__ import annotations

import re
import shutil
import subprocess

from gateway.settings import Settings
from tests.conftest import missing_tool, self_signed_cert
from tests.deploy.conftest import DEPLOY
from tests.deploy.test_systemd import environment

CONF = DEPLOY / "nginx" / "civicrm-gateway.conf"
TEXT = CONF.read_text()


def directive(name: str) -> list[str]:
    return re.findall(rf"^[ \t]*{name}[ \t]+([^;{{}}\n]+);", TEXT, re.M)


def test_proxies_to_the_gateway_of_the_systemd_unit():
    env = environment()
    assert directive("server") == [f"{env['CIVI_GATEWAY_HOST']}:{env['CIVI_GATEWAY_PORT']}"]
    assert directive("proxy_pass") == ["http://civicrm_gateway"]


def test_tls_only_with_modern_protocols():
    assert "443 ssl" in " ".join(directive("listen"))
    assert directive("ssl_protocols") == ["TLSv1.2 TLSv1.3"]
    assert directive("return") == ["301 https://$host$request_uri"]
    assert any(h.startswith("Strict-Transport-Security") for h in directive("add_header"))


def test_limits_match_the_gateway_defaults():
    fields = Settings.model_fields
    size = directive("client_max_body_size")[0]
    assert size == "1m" and 1024 * 1024 == fields["max_body_bytes"].default
    assert int(directive("proxy_read_timeout")[0].rstrip("s")) > fields["http_timeout"].default


def test_nginx_accepts_the_configuration(tmp_path):
    nginx, openssl = shutil.which("nginx"), shutil.which("openssl")
    if nginx is None or openssl is None:
        missing_tool("nginx (and openssl for a test certificate) not installed")
    cert, key = self_signed_cert(tmp_path, "gateway.example.org")
    site = tmp_path / "site.conf"
    site.write_text(
        TEXT.replace("/etc/ssl/certs/gateway.example.org.pem", str(cert)).replace(
            "/etc/ssl/private/gateway.example.org.key", str(key)
        )
    )
    main = tmp_path / "nginx.conf"
    temp = "".join(
        f"{kind}_temp_path {tmp_path}/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    main.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\naccess_log off;\n{temp}include {site};\n}}\n"
    )
    result = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(main)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
