#!/usr/bin/env bash
# Builds Conveyor's images from this checkout, without reaching a package index from inside a
# build: a wheelhouse is made on the host first and is the build context.
#
#   deploy/build.sh [TAG]                            TAG defaults to "latest"
#
# Builds   $PREFIX/conveyor:TAG                  every role (deploy/Containerfile)
#          $PREFIX/conveyor-nats:TAG             nats-server alone, FROM scratch (compose only)
#          $PREFIX/conveyor-example-worker:TAG   deploy/examples/worker: a worker image FROM it
#
# Environment:
#   ENGINE   podman (default) or docker
#   BASE     base image of deploy/Containerfile (default: python:3.11-slim). `local` builds one
#            from Debian's packages first (deploy/base/build-base.sh; root and mmdebstrap).
#   PREFIX   image name prefix (default: localhost)
#   PYTHON   the host Python that builds the wheelhouse: its version must be the image's (3.11)
#   BUILD_ARGS  more arguments for every `build`, e.g. --layers=false (podman: keep no
#            intermediate images, as the container tests do)
set -euo pipefail

tag=${1:-latest}
engine=${ENGINE:-podman}
prefix=${PREFIX:-localhost}
python=${PYTHON:-python3}
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")

wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT

base=${BASE:-docker.io/library/python:3.11-slim}
base_job=
if [ "$base" = local ]; then
  base="$prefix/conveyor-base:bookworm"
  # In the background: it waits on the Debian mirror while pip waits on the package index.
  CONTAINER_ENGINE=$engine "$here/base/build-base.sh" "$base" >/dev/null &
  base_job=$!
fi

# Conveyor and every dependency as wheels for this Python; pip's own index settings apply here,
# on the host, and nowhere inside the build.
"$python" -m pip wheel --quiet --disable-pip-version-check "$root" -w "$wheels"
if [ -n "$base_job" ]; then
  wait "$base_job" || { echo "building the base image $base failed" >&2; exit 1; }
fi

# shellcheck disable=SC2206  # BUILD_ARGS is a list of words
extra=(${BUILD_ARGS:-})
"$engine" build --quiet "${extra[@]}" -f "$here/Containerfile" --build-arg "BASE=$base" \
  -t "$prefix/conveyor:$tag" "$wheels"
"$engine" build --quiet "${extra[@]}" -f "$here/nats/Containerfile" \
  --build-arg "CONVEYOR_IMAGE=$prefix/conveyor:$tag" -t "$prefix/conveyor-nats:$tag" "$here/nats"
"$engine" build --quiet "${extra[@]}" -f "$here/examples/worker/Containerfile" \
  --build-arg "CONVEYOR_IMAGE=$prefix/conveyor:$tag" \
  -t "$prefix/conveyor-example-worker:$tag" "$here/examples/worker"
