#!/usr/bin/env bash
# Builds the Shoal image (default shoal:latest) from the Dockerfile with BuildKit, after making
# the base image debian:bookworm-slim locally when it is missing (scripts/docker-base-image.sh).
# Nothing is pulled. Extra arguments go to `docker build` (e.g. --no-cache).
# Environment: SHOAL_IMAGE (tag), SHOAL_BUILD_JOBS (compile jobs, default 2),
# SHOAL_BUILD_CONTEXT (default: this checkout), DOCKER (docker CLI to use).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=../docker/lib.sh
. docker/lib.sh
IMAGE=${SHOAL_IMAGE:-shoal:latest}
shoal_pick_docker || { echo "docker-build: no docker CLI found (apt-get install docker.io)" >&2; exit 1; }
export DOCKER
scripts/docker-base-image.sh
start=$(date +%s)
DOCKER_BUILDKIT=1 $DOCKER build --progress=plain --tag "$IMAGE" \
  --build-arg "BUILD_JOBS=${SHOAL_BUILD_JOBS:-2}" "$@" "${SHOAL_BUILD_CONTEXT:-.}"
echo "docker-build: $IMAGE built in $(( $(date +%s) - start )) s" \
  "($($DOCKER image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
