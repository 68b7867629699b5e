#!/usr/bin/env bash
# Builds a local stand-in for python:3.11-slim from Debian bookworm's own packages, for
# machines that reach a Debian mirror but no container registry (CI's VM is one).
#
#   deploy/base/build-base.sh [IMAGE]          default IMAGE: localhost/conveyor-base:bookworm
#
# Needs root and mmdebstrap; imports into podman (or $CONTAINER_ENGINE, e.g. docker).
# With registry access you do not need this: the Containerfile's default BASE is
# python:3.11-slim.
set -euo pipefail

image=${1:-localhost/conveyor-base:bookworm}
engine=${CONTAINER_ENGINE:-podman}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# minbase + Python (bookworm's is 3.11, the version the wheelhouse is built for).
# The merged-usr hook replaces the usrmerge package, which would pull in perl (~50 MB);
# documentation and translations are left out as in the official slim images, licences kept.
mmdebstrap \
  --variant=minbase \
  --include=python3,python3-venv,ca-certificates \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  bookworm "$work/base.tar" </dev/null

"$engine" import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  "$work/base.tar" "$image" >/dev/null
echo "$image"
