#!/usr/bin/env bash
# A Debian bookworm base image with Python 3, made without any image registry: debootstrap
# (minbase) from a Debian mirror, plus python3, python3-venv and ca-certificates (the HTTP
# backend verifies TLS against the system trust store), imported with `docker import`.
# For hosts that cannot pull python:3.12-slim-bookworm; build the gateway on it with
#   docker build --network host --build-arg PYTHON_IMAGE=civicrm-gateway-base:bookworm ...
#
#   deploy/docker/base-image.sh [TAG]         (default civicrm-gateway-base:bookworm)
#
# Environment: MIRROR (default: the Debian mirror apt is configured with, else
# http://deb.debian.org/debian), REBUILD=1 to replace an existing image (it is kept otherwise:
# the debootstrap run is the slow part, about two minutes). Needs root, debootstrap and docker.
set -euo pipefail
tag=${1:-civicrm-gateway-base:bookworm}

if [ "${REBUILD:-0}" != 1 ] && docker image inspect "$tag" > /dev/null 2>&1; then
  echo "kept $tag"
  exit 0
fi

apt_mirror() {  # the first non-security Debian mirror in apt's sources (one-line or deb822)
  grep -hsE '^[[:space:]]*(URIs:|deb[[:space:]])' /etc/apt/sources.list \
      /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources \
    | grep -oE 'https?://[^[:space:]]+/debian/?([[:space:]]|$)' | grep -v security \
    | head -n 1 | tr -d '[:space:]' || true
}
mirror=${MIRROR:-$(apt_mirror)}
mirror=${mirror:-http://deb.debian.org/debian}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "debootstrap bookworm from $mirror"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  bookworm "$work/root" "$mirror" > "$work/debootstrap.log" 2>&1 \
  || { tail -n 20 "$work/debootstrap.log" >&2; exit 1; }
# What an image does not need: package lists and downloaded packages, docs, man pages.
rm -rf "$work"/root/var/lib/apt/lists/* "$work"/root/var/cache/apt/*.bin \
  "$work"/root/var/cache/apt/archives/*.deb "$work"/root/usr/share/doc/* "$work"/root/usr/share/man/*
tar --numeric-owner -C "$work/root" -c . \
  | docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
      --message "debootstrap --variant=minbase bookworm from $mirror" - "$tag" > /dev/null
echo "made $tag"
