# shellcheck shell=bash
# Shell helpers shared by scripts/docker-*.sh and tests/e2e (sourced, not run).
# Picks the clients once: $DOCKER (a docker CLI that can build with BuildKit) and $COMPOSE
# (`docker compose` v2 when present, else Debian's `docker-compose` 1.29). Both can be forced
# from the environment: DOCKER=/usr/bin/docker COMPOSE=docker-compose.

# A docker CLI that builds with BuildKit: docker.io 20.10 has it built in; newer CLIs need the
# buildx plugin and refuse DOCKER_BUILDKIT=1 without it. A newer CLI without buildx earlier in
# PATH is skipped in favour of Debian's /usr/bin/docker.
shoal_pick_docker() {
  if [ -n "${DOCKER:-}" ]; then return 0; fi
  local c
  for c in docker /usr/bin/docker; do
    command -v "$c" >/dev/null 2>&1 || continue
    if DOCKER_BUILDKIT=1 "$c" build --help >/dev/null 2>&1; then DOCKER=$c; return 0; fi
  done
  for c in docker /usr/bin/docker; do
    if command -v "$c" >/dev/null 2>&1; then DOCKER=$c; return 0; fi
  done
  return 1
}

# `docker compose` (v2 plugin) if this docker CLI has it, else `docker-compose` (v1.29).
shoal_pick_compose() {
  if [ -n "${COMPOSE:-}" ]; then return 0; fi
  local c
  for c in docker /usr/bin/docker; do
    if command -v "$c" >/dev/null 2>&1 && "$c" compose version >/dev/null 2>&1; then
      COMPOSE="$c compose"; return 0
    fi
  done
  if command -v docker-compose >/dev/null 2>&1; then COMPOSE=docker-compose; return 0; fi
  return 1
}
