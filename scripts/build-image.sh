#!/usr/bin/env bash
# Builds Cairn's container image offline, with no base image and no registry: statically linked
# release binaries (glibc, crt-static) in a FROM-scratch-style root file system, written as an
# OCI archive with umoci and skopeo (Debian packages, installed here when missing). D73.
#
#   scripts/build-image.sh [--output FILE] [--tag TAG] [--load]
#
#   --output FILE  the OCI archive to write (default: $CARGO_TARGET_DIR-static/cairn-image.tar)
#   --tag TAG      the image tag (default: dev)
#   --load         also copy the image into the local Docker engine as cairn:TAG
#
# The image holds cairn-node (the entrypoint), cairn-coordinator, cairn-gateway and cairnctl in
# /usr/local/bin, runs as user 65532 (cairn) and keeps data in /data. The static build has its own
# target folder beside CARGO_TARGET_DIR (CAIRN_STATIC_TARGET_DIR), so a later run rebuilds only
# what changed, and it links the RocksDB library scripts/lib/rocksdb.sh compiled once for every
# build (position-independent code, so a static-pie link takes it as it is).
set -euo pipefail
cd "$(dirname "$0")/.."

OUTPUT=""
TAG=dev
LOAD=0
while [ $# -gt 0 ]; do
    case "$1" in
        --output) OUTPUT="$2"; shift 2 ;;
        --tag) TAG="$2"; shift 2 ;;
        --load) LOAD=1; shift ;;
        -h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build-image: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
done
case "$TAG" in
    *[!A-Za-z0-9_.-]* | "") echo "build-image: --tag must be letters, digits, '.', '_' or '-'" >&2; exit 2 ;;
esac

source scripts/lib/prepare.sh

# umoci writes the image layout, skopeo turns it into an archive (and into the Docker engine).
image_tools=()
for tool in umoci skopeo; do
    command -v "$tool" >/dev/null 2>&1 || image_tools+=("$tool")
done
if [ "${#image_tools[@]}" -gt 0 ]; then
    cairn_install_packages "${image_tools[@]}"
fi

TARGET=x86_64-unknown-linux-gnu
if [ "$(uname -m)" != x86_64 ]; then
    echo "build-image: only x86_64 images are built (this machine is $(uname -m))" >&2
    exit 1
fi
STATIC_DIR="${CAIRN_STATIC_TARGET_DIR:-$CARGO_TARGET_DIR-static}"
OUTPUT="${OUTPUT:-$STATIC_DIR/cairn-image.tar}"
BINARIES=(cairn-node cairn-coordinator cairn-gateway cairnctl)

# RocksDB's C++ needs libstdc++; librocksdb-sys asks for it by name (-lstdc++), and a static link
# takes only an archive. gcc's own folder also holds the shared library, so the archive gets a
# folder of its own that comes first on the search path.
static_libs="$STATIC_DIR/static-libs"
mkdir -p "$static_libs"
libstdcxx="$(${CXX:-g++} -print-file-name=libstdc++.a)"
if [ ! -f "$libstdcxx" ]; then
    echo "build-image: no static libstdc++ ($libstdcxx); install Debian's libstdc++-12-dev" >&2
    exit 1
fi
ln -sf "$libstdcxx" "$static_libs/libstdc++.a"

echo "build-image: static release build into $STATIC_DIR" >&2
started=$SECONDS
packages=()
for package in cairn-storage-node cairn-coordinator cairn-gateway cairn-cli; do packages+=(-p "$package"); done
# RUSTFLAGS with an explicit --target reach only the target's code, not build scripts, which
# stay ordinary dynamic programs.
RUSTFLAGS="-C target-feature=+crt-static -L native=$static_libs" CARGO_TARGET_DIR="$STATIC_DIR" \
    cargo build --release --locked --target "$TARGET" "${packages[@]}" --bins
echo "build-image: static build took $((SECONDS - started)) s" >&2

bin_dir="$STATIC_DIR/$TARGET/release"
for binary in "${BINARIES[@]}"; do
    # A static binary has no program interpreter and needs no shared library.
    if readelf -l "$bin_dir/$binary" | grep -q 'INTERP' || readelf -d "$bin_dir/$binary" | grep -q '(NEEDED)'; then
        echo "build-image: $bin_dir/$binary is not statically linked" >&2
        exit 1
    fi
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
layout="$work/layout"
bundle="$work/bundle"
umoci init --layout "$layout"
umoci new --image "$layout:$TAG"
umoci unpack --image "$layout:$TAG" "$bundle" >/dev/null
rootfs="$bundle/rootfs"
install -d -m 0755 "$rootfs/usr/local/bin" "$rootfs/etc" "$rootfs/etc/cairn"
for binary in "${BINARIES[@]}"; do
    install -m 0755 "$bin_dir/$binary" "$rootfs/usr/local/bin/$binary"
done
# The user the processes run as (no shell, no home to log into), and the name service order a
# static glibc reads: /etc/hosts (which Docker and Kubernetes write) before DNS.
printf 'root:x:0:0:root:/root:/sbin/nologin\ncairn:x:65532:65532:cairn:/data:/sbin/nologin\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\ncairn:x:65532:\n' >"$rootfs/etc/group"
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
install -d -m 0750 -o 65532 -g 65532 "$rootfs/data"
install -d -m 1777 "$rootfs/tmp"
umoci repack --image "$layout:$TAG" "$bundle" >/dev/null

version="$(awk -F'"' '/^\[workspace.package\]/ { section = 1 } section && /^version = / { print $2; exit }' Cargo.toml)"
revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
umoci config --image "$layout:$TAG" \
    --config.user 65532:65532 \
    --config.entrypoint /usr/local/bin/cairn-node \
    --config.workingdir /data \
    --config.env PATH=/usr/local/bin \
    --config.volume /data \
    --config.exposedports 7000/tcp --config.exposedports 7001/tcp --config.exposedports 7101/tcp \
    --config.exposedports 9000/tcp \
    --config.label org.opencontainers.image.title=cairn \
    --config.label "org.opencontainers.image.description=Cairn: a sharded, strongly consistent key-value store (cairn-node, cairn-coordinator, cairn-gateway, cairnctl)" \
    --config.label "org.opencontainers.image.version=$version" \
    --config.label "org.opencontainers.image.revision=$revision" \
    --config.label org.opencontainers.image.licenses=Apache-2.0 \
    --history.created_by "scripts/build-image.sh"
umoci gc --layout "$layout"

mkdir -p "$(dirname "$OUTPUT")"
rm -f "$OUTPUT"
skopeo copy --quiet "oci:$layout:$TAG" "oci-archive:$OUTPUT:cairn:$TAG"
echo "build-image: wrote $OUTPUT ($(du -h "$OUTPUT" | cut -f1))" >&2
skopeo inspect --config "oci-archive:$OUTPUT" |
    python3 -c 'import json, sys; c = json.load(sys.stdin)["config"]; print(json.dumps({k: c.get(k) for k in ("Entrypoint", "User", "WorkingDir", "Env", "ExposedPorts", "Volumes", "Labels")}, indent=2))'
if [ "$LOAD" = 1 ]; then
    skopeo copy --quiet "oci-archive:$OUTPUT" "docker-daemon:cairn:$TAG"
    echo "build-image: loaded into Docker as cairn:$TAG" >&2
fi
