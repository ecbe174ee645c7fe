# Shoal container image: shoal-coordinator, shoal-worker, shoalctl and shoal-serve on Debian 12.
#
#   scripts/docker-build.sh          # makes the base image if missing, then builds shoal:latest
#
# Needs BuildKit (DOCKER_BUILDKIT=1; docker.io 20.10's built-in Dockerfile frontend, so no
# `# syntax=` line: that would pull a frontend image). Nothing is pulled: the base image
# debian:bookworm-slim is made locally by scripts/docker-base-image.sh (debootstrap).
#
# Stages: deps (the -dev packages), builder (compiles the four binaries; ccache lives in a
# BuildKit cache mount, so a rebuild after a source change recompiles only what changed),
# runtime (runtime libraries, the binaries, Fashion-MNIST; runs as the non-root user shoal).
ARG BASE_IMAGE=debian:bookworm-slim
# builder, or prebuilt: see the prebuilt stage.
ARG BINARIES=builder

FROM ${BASE_IMAGE} AS deps
ARG DEBIAN_FRONTEND=noninteractive
# The apt caches are BuildKit cache mounts shared with the runtime stage: a warm rebuild
# downloads nothing, and the image layers hold no package lists. dpkg without fsync (a build
# that dies is thrown away anyway) installs the ~420 packages several times faster.
RUN --mount=type=cache,id=shoal-apt-archives,target=/var/cache/apt,sharing=locked \
    --mount=type=cache,id=shoal-apt-lists,target=/var/lib/apt/lists,sharing=locked \
    rm -f /etc/apt/apt.conf.d/docker-clean \
 && echo force-unsafe-io > /etc/dpkg/dpkg.cfg.d/docker-unsafe-io \
 && apt-get update -q \
 && apt-get install -y -q --no-install-recommends \
      build-essential cmake ninja-build ccache pkg-config \
      libtorch-dev libzmq3-dev cppzmq-dev libcereal-dev libssl-dev zlib1g-dev libseccomp-dev \
      libspdlog-dev nlohmann-json3-dev libcli11-dev libtomlplusplus-dev libcpp-httplib-dev

FROM deps AS builder
WORKDIR /src
# Only what the four executables are built from (tests, benchmarks and docs stay out, so
# editing them does not invalidate this layer).
COPY CMakeLists.txt ./
COPY base/ base/
COPY security/ security/
COPY data/ data/
COPY model/ model/
COPY nn/ nn/
COPY store/ store/
COPY evaluator/ evaluator/
COPY protocols/ protocols/
COPY coordinator/ coordinator/
COPY worker/ worker/
COPY tools/ tools/
ARG BUILD_JOBS=2
# PCH-aware ccache settings: without them every TU that uses the precompiled LibTorch header
# would bypass the cache.
RUN --mount=type=cache,id=shoal-ccache,target=/ccache \
    export CCACHE_DIR=/ccache CCACHE_MAXSIZE=2G \
      CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime \
 && ccache -z >/dev/null \
 && cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DSHOAL_BUILD_TESTS=OFF -DSHOAL_BUILD_BENCH=OFF >/dev/null \
 && ninja -C /build -j "${BUILD_JOBS}" shoal-coordinator shoal-evaluator shoal-worker shoalctl \
      shoal-export shoal-serve \
 && strip /build/bin/* \
 && { ccache -s | grep -E -i "hits|misses" || true; }

# BINARIES=prebuilt takes the six executables from the build context's prebuilt/ folder
# instead (compiled on a Debian 12 host against the same packages): the e2e test uses the
# binaries its build tree just compiled, so CI does not compile the project twice.
FROM scratch AS prebuilt
COPY prebuilt/shoal-coordinator prebuilt/shoal-evaluator prebuilt/shoal-worker prebuilt/shoalctl \
     prebuilt/shoal-export prebuilt/shoal-serve /build/bin/
FROM ${BINARIES} AS binaries

FROM ${BASE_IMAGE} AS runtime
ARG DEBIAN_FRONTEND=noninteractive
RUN --mount=type=cache,id=shoal-apt-archives,target=/var/cache/apt,sharing=locked \
    --mount=type=cache,id=shoal-apt-lists,target=/var/lib/apt/lists,sharing=locked \
    rm -f /etc/apt/apt.conf.d/docker-clean \
 && echo force-unsafe-io > /etc/dpkg/dpkg.cfg.d/docker-unsafe-io \
 && apt-get update -q \
 && apt-get install -y -q --no-install-recommends \
      libtorch1.13 libopenblas0-pthread libzmq5 libssl3 zlib1g libspdlog1.10 libfmt9 libseccomp2 \
      libtomlplusplus3 libcpp-httplib0.11 dataset-fashion-mnist \
 && rm /etc/dpkg/dpkg.cfg.d/docker-unsafe-io \
 && printf '%s\n' 'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb || true"; };' \
      > /etc/apt/apt.conf.d/docker-clean
# One non-root user for every role. The volume mount points exist in the image, owned by
# shoal, so that Docker gives empty named volumes mounted there the same owner.
RUN groupadd --system --gid 10001 shoal \
 && useradd --system --uid 10001 --gid shoal --home-dir /srv/shoal --shell /usr/sbin/nologin shoal \
 && install -d -o shoal -g shoal -m 0755 /srv/shoal /srv/shoal/data /srv/shoal/silos \
      /srv/shoal/silos/silo-1 /srv/shoal/silos/silo-2 /srv/shoal/silos/silo-3 /srv/shoal/silos/silo-4 \
 && install -d -o shoal -g shoal -m 0700 /srv/shoal/run /srv/shoal/ca /srv/shoal/ca-root /srv/shoal/creds \
      /srv/shoal/join /srv/shoal/bundles \
      /srv/shoal/bundles/worker-1 /srv/shoal/bundles/worker-2 /srv/shoal/bundles/worker-3 \
      /srv/shoal/bundles/worker-4 /srv/shoal/joins /srv/shoal/joins/worker-4 /srv/shoal/http
COPY --from=binaries /build/bin/shoal-coordinator /build/bin/shoal-evaluator /build/bin/shoal-worker \
     /build/bin/shoalctl /build/bin/shoal-export /build/bin/shoal-serve /usr/local/bin/
COPY docker/entrypoint.sh /usr/local/bin/shoal-entrypoint
USER shoal
WORKDIR /srv/shoal
# ZeroMQ (coordinator), dashboard and HTTP API (coordinator).
EXPOSE 5555 8080
# Coordinator: its /api/status must answer 200; other roles report healthy while running.
HEALTHCHECK --interval=5s --timeout=5s --start-period=60s --retries=3 \
  CMD ["shoal-entrypoint", "healthcheck"]
ENTRYPOINT ["shoal-entrypoint"]
CMD ["help"]
