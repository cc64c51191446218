#
# civicrm-gateway container image.
#
#   docker build -t civicrm-gateway .          # the gateway; needs only the base image below
#
# The cv/pipe variant with the docker CLI is deploy/docker/cv.Dockerfile, built on top of this
# image, so that a plain `docker build .` (classic builder included) pulls nothing else.
#
# Air-gapped builds (docs/deploy.md, "Building without a registry or PyPI"):
#   deploy/docker/wheelhouse.sh             # on a connected machine: wheels of every dependency
#   deploy/docker/base-image.sh             # a Debian base with Python, made without a registry
#   docker build --network host --build-arg PYTHON_IMAGE=civicrm-gateway-base:bookworm -t civicrm-gateway .
# When deploy/docker/wheelhouse/ holds wheels, pip installs from there only (--no-index);
# otherwise from PyPI.
#
# Configuration comes only from the environment (CIVI_GATEWAY_*) and from secret files in
# /run/secrets (the default of CIVI_GATEWAY_SECRETS_DIR), each named like the lower-cased
# variable (e.g. /run/secrets/civi_gateway_http_api_key).
# Nothing secret is baked into the image. See docs/deploy.md.

# Any Debian-like image with python3 (3.11+) and its venv module.
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

# --- build: a wheel of the project, installed with its dependencies into a venv ------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY deploy/docker/wheelhouse/ /wheelhouse/
COPY pyproject.toml ./

# Dependencies first, read from pyproject.toml (with the `redis` extra, which lets several
# replicas share rate-limit state): a change to the code or README reuses this layer.
# With a wheelhouse, pip installs from it only, build requirements included: nothing is fetched.
RUN python3 -m venv /opt/civicrm-gateway \
    && if ls /wheelhouse/*.whl > /dev/null 2>&1; then \
         export PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheelhouse; \
       fi \
    && python3 -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; print("\n".join(p["dependencies"] + p["optional-dependencies"]["redis"]))' > requirements.txt \
    && /opt/civicrm-gateway/bin/pip install --requirement requirements.txt

COPY README.md ./
COPY gateway ./gateway

# The wheel (not the source tree) is what goes into the venv.
RUN if ls /wheelhouse/*.whl > /dev/null 2>&1; then \
         export PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheelhouse; \
       fi \
    && /opt/civicrm-gateway/bin/pip wheel --no-deps --wheel-dir /wheels . \
    && set -- /wheels/civicrm_gateway-*.whl \
    && /opt/civicrm-gateway/bin/pip install --no-deps "$1" \
    && /opt/civicrm-gateway/bin/pip check \
    && /opt/civicrm-gateway/bin/pip uninstall --yes pip setuptools wheel \
    && /opt/civicrm-gateway/bin/civicrm-gateway --help > /dev/null

# --- runtime: the base image, the venv, an unprivileged user; no compilers, no pip ----------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="civicrm-gateway" \
      org.opencontainers.image.description="HTTP gateway to CiviCRM APIv4/APIv3" \
      org.opencontainers.image.licenses="AGPL-3.0-or-later"

RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid gateway --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin gateway

COPY --from=build /opt/civicrm-gateway /opt/civicrm-gateway
# What outlives a restart (the embedded sandbox's database, the OpenAPI cache): the only folder
# the gateway user may write; a volume, so that it stays writable with a read-only root.
RUN install -d -o 10001 -g 10001 -m 0750 /var/lib/civicrm-gateway
VOLUME ["/var/lib/civicrm-gateway"]

# Defaults only; every one can be overridden at run time. The gateway refuses to listen on a
# non-loopback address without client tokens (CIVI_GATEWAY_CLIENT_TOKENS, best as the secret file
# /run/secrets/civi_gateway_client_tokens) unless CIVI_GATEWAY_ALLOW_ANONYMOUS=true.
ENV PATH="/opt/civicrm-gateway/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CIVI_GATEWAY_HOST=0.0.0.0 \
    CIVI_GATEWAY_PORT=8000 \
    CIVI_GATEWAY_WORKERS=1 \
    CIVI_GATEWAY_LOG_FORMAT=json \
    CIVI_GATEWAY_STATE_DIR=/var/lib/civicrm-gateway

# A working directory the gateway user cannot write (root-owned, 0755): nothing can plant a
# `.env` there (the gateway reads `.env` from its working directory).
WORKDIR /opt/civicrm-gateway
USER 10001:10001
EXPOSE 8000

# Liveness only (/healthz does not call CiviCRM); /readyz is for orchestrators' readiness checks.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('CIVI_GATEWAY_PORT', '8000'), timeout=4)"]

# docker stop sends SIGTERM; the gateway then drains calls for up to CIVI_GATEWAY_SHUTDOWN_GRACE
# (30 s): give it longer than that (docker run --stop-timeout 40, compose stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["civicrm-gateway"]
CMD ["serve"]
