#!/usr/bin/env bash
# Debian packages some tests drive for real: headless Chromium (the offline /docs test),
# redis-server (rate limits shared by replicas), nginx (`nginx -t` on deploy/nginx), and Docker
# for tests/docker (docker.io: engine and client; docker-compose 1.29 when no Compose v2 is
# there; debootstrap for the local base image). tests/docker starts dockerd itself.
# Installed only when missing; needs root or sudo. Without them those tests fail or skip
# with a reason, so a failure here is a warning, not the end of the run.
set -uo pipefail
need=()
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
command -v redis-server >/dev/null || need+=(redis-server)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v dockerd >/dev/null || [ -x /usr/sbin/dockerd ] || need+=(docker.io)
{ docker compose version || command -v docker-compose; } >/dev/null 2>&1 || need+=(docker-compose)
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
[ ${#need[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && sudo="sudo"
# docker.io's postinst would start dockerd with its defaults (a bridge, NAT rules); forbid
# service starts while installing: the tests start dockerd with --bridge=none --iptables=false.
if [[ " ${need[*]} " == *" docker.io "* ]] && [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null \
        && $sudo chmod 0755 /usr/sbin/policy-rc.d && trap '$sudo rm -f /usr/sbin/policy-rc.d' EXIT
fi
if ! { $sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive \
        $sudo apt-get install -y -q --no-install-recommends "${need[@]}"; } >/dev/null 2>&1; then
    echo "warning: could not install ${need[*]}; the tests that need them will fail or skip" >&2
fi
exit 0
