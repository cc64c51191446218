#!/usr/bin/env bash
# Wheels of the gateway's dependencies (the `redis` extra included) and of its build requirements
# into deploy/docker/wheelhouse/, for an image build that reaches no package index.
#
#   deploy/docker/wheelhouse.sh [PYTHON]      (default python3)
#
# Run it on a machine that reaches PyPI (or your mirror), with a Python of the same minor version
# and platform as the image's (3.12 for python:3.12-slim-bookworm, 3.11 for the Debian bookworm
# base made by base-image.sh): binary wheels are made for the Python that runs pip. Then copy
# the project with the wheelhouse to the build host. Existing wheels are kept; pip adds what is
# missing. The project's own wheel is not kept: the image builds it from the source it is given.
set -euo pipefail
cd "$(dirname "$0")/../.."
python=${1:-python3}
dir=deploy/docker/wheelhouse
"$python" -m pip wheel --quiet --wheel-dir "$dir" '.[redis]' 'setuptools>=69' wheel
rm -f "$dir"/civicrm_gateway-*.whl
echo "$(find "$dir" -name '*.whl' | wc -l) wheels in $dir for $("$python" -c 'import sys; print("Python %d.%d" % sys.version_info[:2])')"
