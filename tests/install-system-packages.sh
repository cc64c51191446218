#!/usr/bin/env bash
# Debian packages some tests drive for real: headless Chromium (the offline /docs test),
# redis-server (rate limits shared by replicas), nginx (`nginx -t` on deploy/nginx), Docker
# for tests/docker (docker.io: engine and client; docker-compose 1.29 when no Compose v2 is
# there; mmdebstrap for the local base image; tests/docker starts dockerd itself), and for the
# executable README (tests/docs): jq, used by its shell examples, and php-cli + php-curl for its
# PHP client example, nodejs (if missing) for its JavaScript one; Node.js and npm for the
# OpenAPI tools of tests/openapi/node, the MCP Inspector of tests/mcp/node and the docs' webhook
# receiver's package (tests/docs/node; all installed by the tests with `npm ci`; Node.js 20.19+);
# systemd for `systemd-analyze verify` on deploy/systemd (tests/deploy/test_systemd.py).
# Installed only when missing; needs root or sudo. When the install fails, apt's own output is
# shown. Under CI=true every one of them is required: a failure ends the run here, loudly.
# Elsewhere it is a warning, and the tests that need a missing tool fail or skip with a reason.
set -uo pipefail
need=()
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
command -v redis-server >/dev/null || need+=(redis-server)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v dockerd >/dev/null || [ -x /usr/sbin/dockerd ] || need+=(docker.io)
{ docker compose version || command -v docker-compose; } >/dev/null 2>&1 || need+=(docker-compose)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v jq >/dev/null || need+=(jq)
command -v node >/dev/null || need+=(nodejs)
command -v php >/dev/null || need+=(php-cli)
command -v php >/dev/null && php -r 'exit(function_exists("curl_init") ? 0 : 1);' || need+=(php-curl)
command -v npm >/dev/null || need+=(npm)
command -v systemd-analyze >/dev/null || need+=(systemd)
[ ${#need[@]} -eq 0 ] && exit 0
strict=false
[ "${CI:-}" = "true" ] && strict=true
sudo=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && sudo="sudo"
log="$(mktemp)"
policy_rc=""
# docker.io's postinst would start dockerd with its defaults (a bridge, NAT rules); forbid
# service starts while installing: the tests start dockerd with --bridge=none --iptables=false.
if [[ " ${need[*]} " == *" docker.io "* ]] && [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null \
        && $sudo chmod 0755 /usr/sbin/policy-rc.d && policy_rc=1
fi
trap 'rm -f "$log"; [ -z "$policy_rc" ] || $sudo rm -f /usr/sbin/policy-rc.d' EXIT
echo "installing ${need[*]} (apt-get)" >&2
if ! { $sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive \
        $sudo apt-get install -y -q --no-install-recommends "${need[@]}"; } >"$log" 2>&1; then
    echo "could not install ${need[*]}; apt-get said:" >&2
    tail -n 40 "$log" | sed 's/^/    /' >&2
    if $strict; then
        echo "error: CI=true requires every package the tests use; fix the above and re-run" >&2
        exit 1
    fi
    echo "warning: the tests that need them will fail or skip" >&2
fi
if $strict; then
    missing=()
    for tool in chromium chromedriver redis-server jq php node npm docker mmdebstrap systemd-analyze; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
    command -v php >/dev/null && { php -r 'exit(function_exists("curl_init") ? 0 : 1);' \
        || missing+=(php-curl); }
    if [ ${#missing[@]} -ne 0 ]; then
        echo "error: CI=true and still missing after the install: ${missing[*]}" >&2
        exit 1
    fi
fi
exit 0
