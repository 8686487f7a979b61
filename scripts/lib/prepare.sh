# Sourced by the scripts in scripts/: installs what the build needs on a fresh Debian machine
# and chooses the cargo target directory.
#
# RocksDB's C++ takes about 18 minutes to compile on two cores, so build output lives outside
# the clone (CAIRN_TARGET_DIR, default /var/cache/cairn/target) where a later clone can reuse
# it; when that folder cannot be created, ./target is used and everything builds from nothing.

have_libclang() {
    compgen -G "/usr/lib/llvm-*/lib/libclang*.so*" >/dev/null || compgen -G "/usr/lib/*/libclang*.so*" >/dev/null
}

if ! have_libclang; then
    echo "prepare: installing libclang-dev (bindgen needs it to build RocksDB)" >&2
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libclang-dev clang >/dev/null
fi

# cairn-bench measures etcd with the etcd-client crate, whose build script compiles etcd's
# protos with protoc; `cargo build --workspace` therefore needs it too.
if ! command -v protoc >/dev/null 2>&1; then
    echo "prepare: installing protobuf-compiler (etcd-client's build script needs protoc)" >&2
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq protobuf-compiler >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "prepare: cargo not found; install Rust with rustup (https://rustup.rs) first" >&2
    exit 1
fi

target_dir="${CAIRN_TARGET_DIR:-/var/cache/cairn/target}"
if mkdir -p "$target_dir" 2>/dev/null && [ -w "$target_dir" ]; then
    export CARGO_TARGET_DIR="$target_dir"
else
    export CARGO_TARGET_DIR="$PWD/target"
fi
echo "prepare: build output in $CARGO_TARGET_DIR" >&2
