#!/usr/bin/env bash
# Debian packages some tests drive for real: headless Chromium (the offline /docs test),
# redis-server (rate limits shared by replicas), nginx (`nginx -t` on deploy/nginx), Node.js
# and npm (the OpenAPI tools of tests/openapi/node, which the tests install with `npm ci`;
# they need Node.js 20.19 or newer, which the machines come with).
# Installed only when missing; needs root or sudo. Without them those tests fail or skip
# with a reason, so a failure here is a warning, not the end of the run.
set -uo pipefail
need=()
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
command -v redis-server >/dev/null || need+=(redis-server)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
[ ${#need[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && sudo="sudo"
if ! { $sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive \
        $sudo apt-get install -y -q --no-install-recommends "${need[@]}"; } >/dev/null 2>&1; then
    echo "warning: could not install ${need[*]}; the tests that need them will fail or skip" >&2
fi
exit 0
