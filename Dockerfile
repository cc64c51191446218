# syntax=docker/dockerfile:1
#
# civicrm-gateway container image.
#
#   docker build -t civicrm-gateway .                   # the gateway (sandbox/http backends)
#   docker build -t civicrm-gateway:cv --target cv .    # plus the docker CLI, for the cv/pipe
#                                                       # backends through `docker exec`
#
# Configuration comes only from the environment (CIVI_GATEWAY_*) and from secret files in
# /run/secrets (the default of CIVI_GATEWAY_SECRETS_DIR), each named like the lower-cased
# variable (e.g. /run/secrets/civi_gateway_http_api_key).
# Nothing secret is baked into the image. See docs/deploy.md.

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

# --- build: a wheel of the project, installed with its dependencies into a venv ------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway

# The wheel (not the source tree) is what goes into the venv; the `redis` extra lets several
# replicas share rate-limit state (CIVI_GATEWAY_RATE_LIMIT_STORAGE=redis://...).
RUN python -m venv /opt/civicrm-gateway \
    && /opt/civicrm-gateway/bin/pip wheel --no-deps --wheel-dir /wheels . \
    && set -- /wheels/civicrm_gateway-*.whl \
    && /opt/civicrm-gateway/bin/pip install "$1[redis]" \
    && /opt/civicrm-gateway/bin/pip uninstall --yes pip setuptools wheel \
    && /opt/civicrm-gateway/bin/civicrm-gateway --help > /dev/null

# --- runtime: slim Python, the venv, an unprivileged user; no compilers, no pip --------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="civicrm-gateway" \
      org.opencontainers.image.description="HTTP gateway to CiviCRM APIv4/APIv3" \
      org.opencontainers.image.licenses="AGPL-3.0-or-later"

RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid gateway --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin gateway

COPY --from=build /opt/civicrm-gateway /opt/civicrm-gateway

# Defaults only; every one can be overridden at run time. The gateway refuses to listen on a
# non-loopback address without client tokens (CIVI_GATEWAY_CLIENT_TOKENS, best as the secret file
# /run/secrets/civi_gateway_client_tokens) unless CIVI_GATEWAY_ALLOW_ANONYMOUS=true.
ENV PATH="/opt/civicrm-gateway/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CIVI_GATEWAY_HOST=0.0.0.0 \
    CIVI_GATEWAY_PORT=8000 \
    CIVI_GATEWAY_WORKERS=1 \
    CIVI_GATEWAY_LOG_FORMAT=json

WORKDIR /tmp
USER 10001:10001
EXPOSE 8000

# Liveness only (/healthz does not call CiviCRM); /readyz is for orchestrators' readiness checks.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('CIVI_GATEWAY_PORT', '8000'), timeout=4)"]

ENTRYPOINT ["civicrm-gateway"]
CMD ["serve"]

# --- cv: the runtime plus the docker CLI (client only), for CIVI_GATEWAY_BACKEND=cv|pipe with
# CIVI_GATEWAY_CV_CONTEXT="docker exec -i ..." against a CiviCRM container. Using it means mounting
# the Docker socket, which is root on the host: see docs/deploy.md before you do. -----------------
FROM docker:27-cli AS docker-cli

FROM runtime AS cv
COPY --from=docker-cli /usr/local/bin/docker /usr/local/bin/docker

# The default target is the plain gateway, without the docker CLI.
FROM runtime
