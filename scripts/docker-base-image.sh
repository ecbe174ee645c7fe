#!/usr/bin/env bash
# Builds the base image debian:bookworm-slim locally when it is missing: no registry is used.
#   debootstrap --variant=minbase bookworm DIR && tar -C DIR -c . | docker import - IMAGE
# plus what Debian's official slim image adds (apt sources with updates and security, no
# documentation or man pages, apt lists and caches removed). About 30-60 s. Needs root and
# debootstrap (apt-get install debootstrap).
# Environment: SHOAL_BASE_IMAGE (default debian:bookworm-slim), DEBIAN_MIRROR
# (default http://deb.debian.org/debian), FORCE=1 rebuilds an existing image.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=../docker/lib.sh
. "$HERE/docker/lib.sh"
IMAGE=${SHOAL_BASE_IMAGE:-debian:bookworm-slim}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

shoal_pick_docker || { echo "docker-base-image: no docker CLI found" >&2; exit 1; }
if [ "${FORCE:-0}" != "1" ] && $DOCKER image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "docker-base-image: $IMAGE is present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then echo "docker-base-image: debootstrap needs root" >&2; exit 1; fi
command -v debootstrap >/dev/null || { echo "docker-base-image: apt-get install debootstrap" >&2; exit 1; }

start=$(date +%s)
dir=$(mktemp -d /tmp/shoal-rootfs.XXXXXX)
cleanup() { rm -rf "$dir"; }
trap cleanup EXIT
echo "docker-base-image: debootstrap --variant=minbase bookworm ($MIRROR)"
debootstrap --variant=minbase bookworm "$dir" "$MIRROR" > "$dir.log" 2>&1 || {
  tail -30 "$dir.log" >&2; rm -f "$dir.log"; exit 1; }
rm -f "$dir.log"

# What the official slim image does on top of debootstrap.
rm -f "$dir/etc/apt/sources.list"
cat > "$dir/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY_MIRROR
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
cat > "$dir/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
EOF
cat > "$dir/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
echo 'Acquire::Languages "none";' > "$dir/etc/apt/apt.conf.d/docker-no-languages"
echo 'Acquire::GzipIndexes "true";' > "$dir/etc/apt/apt.conf.d/docker-gzip-indexes"
echo 'APT::AutoRemove::SuggestsImportant "false";' > "$dir/etc/apt/apt.conf.d/docker-autoremove-suggests"
find "$dir/usr/share/doc" -mindepth 2 -not -name copyright -not -type d -delete 2>/dev/null || true
r=${dir:?}
# shellcheck disable=SC2115  # $r is checked non-empty just above
rm -rf "$r"/usr/share/man/* "$r"/usr/share/info/* "$r"/usr/share/locale/* \
  "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/*.bin "$r"/var/cache/apt/archives/*.deb \
  "$r"/var/log/* "$r"/tmp/* "$r"/dev/* "$r"/proc/* "$r"/sys/*
: > "$dir/etc/machine-id"

echo "docker-base-image: importing as $IMAGE"
tar --numeric-owner -C "$dir" -c . | $DOCKER import \
  --change 'CMD ["bash"]' --change 'ENV LANG=C.UTF-8' - "$IMAGE" >/dev/null
echo "docker-base-image: $IMAGE built in $(( $(date +%s) - start )) s ($($DOCKER image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
