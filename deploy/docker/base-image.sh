#!/usr/bin/env bash
# A Debian bookworm base image with Python 3, made without any image registry, from a Debian
# mirror: python3, python3-venv and ca-certificates (the HTTP backend verifies TLS against the
# system trust store) and passwd (useradd), on Debian's Essential set, imported with
# `docker import`. For hosts that cannot pull python:3.12-slim-bookworm; build the gateway on it with
#   docker build --network host --build-arg PYTHON_IMAGE=civicrm-gateway-base:bookworm ...
#
#   deploy/docker/base-image.sh [TAG]         (default civicrm-gateway-base:bookworm)
#
# mmdebstrap makes it when installed (about 1 minute: parallel downloads, the tarball streamed
# into `docker import`), else debootstrap --variant=minbase (2 to 6 minutes). Neither image
# keeps documentation, man pages, translations, package lists or downloaded packages.
# Environment: MIRROR (default: the Debian mirror apt is configured with, else
# http://deb.debian.org/debian), REBUILD=1 to replace an existing image (it is kept otherwise).
# Needs root, mmdebstrap or debootstrap, and docker.
set -euo pipefail
tag=${1:-civicrm-gateway-base:bookworm}
PATH=$PATH:/usr/sbin:/sbin

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
packages=python3,python3-venv,ca-certificates,passwd
drop=(/usr/share/doc/ /usr/share/man/ /usr/share/info/ /usr/share/locale/)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
import_image() {  # a root file system as a tar stream on stdin -> the image
  docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' --message "$1" - "$tag" > /dev/null
}
if command -v mmdebstrap > /dev/null; then
  echo "mmdebstrap bookworm from $mirror"
  excludes=()
  for path in "${drop[@]}"; do excludes+=("--dpkgopt=path-exclude=$path*"); done
  # The tarball goes straight to docker import; apt's lists and cache are left out by mmdebstrap.
  mmdebstrap --variant=essential --include="$packages" "${excludes[@]}" \
      bookworm - "$mirror" 2> "$work/mmdebstrap.log" \
    | import_image "mmdebstrap --variant=essential bookworm from $mirror" \
    || { tail -n 20 "$work/mmdebstrap.log" >&2; exit 1; }
else
  echo "debootstrap bookworm from $mirror"
  debootstrap --variant=minbase --include="$packages" \
    bookworm "$work/root" "$mirror" > "$work/debootstrap.log" 2>&1 \
    || { tail -n 20 "$work/debootstrap.log" >&2; exit 1; }
  rm -rf "$work"/root/var/lib/apt/lists/* "$work"/root/var/cache/apt/*.bin \
    "$work"/root/var/cache/apt/archives/*.deb
  for path in "${drop[@]}"; do rm -rf "${work:?}/root$path"*; done
  tar --numeric-owner -C "$work/root" -c . \
    | import_image "debootstrap --variant=minbase bookworm from $mirror"
fi
echo "made $tag"
