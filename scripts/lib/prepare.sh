# Sourced by the scripts in scripts/: installs what the build needs on a fresh Debian machine
# and chooses the cargo target directory.
#
# A prerequisite is judged by the Debian package that provides exactly what the build uses,
# never by a file that merely looks like it: a new machine ships libclang-cpp14
# (libclang-cpp.so.14), which is not the libclang that bindgen loads (issue 13). After
# installing, scripts/lib/check-prerequisites.sh proves each one usable in a way that does not
# share this file's logic (it loads libclang and parses a header with it, runs protoc), so a
# wrong check here fails at once with the missing piece named, not minutes into a build.
#
# RocksDB's C++ takes about 18 minutes to compile on two cores, so build output lives outside
# the clone (CAIRN_TARGET_DIR, default /var/cache/cairn/target) where a later clone can reuse
# it; when that folder cannot be created, ./target is used and everything builds from nothing.

# What the build needs, as Debian packages:
# - libclang-dev: librocksdb-sys runs bindgen, which loads libclang.so at run time and needs
#   clang's own headers (stddef.h, ...) from libclang-common; libclang-dev pulls in both.
# - protobuf-compiler and libprotobuf-dev: cairn-bench measures etcd through the etcd-client
#   crate, whose build script compiles etcd's protos with protoc; they import protobuf's own
#   descriptor.proto and struct.proto, which libprotobuf-dev installs under /usr/include
#   (Cairn's own protos need no protoc, D2).
# - faketime: the timestamp oracle's tests step a real coordinator's clock backwards with
#   libfaketime (LD_PRELOAD); the library is in this package.
CAIRN_BUILD_PACKAGES=(libclang-dev protobuf-compiler libprotobuf-dev faketime)

cairn_package_installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

cairn_install_packages() {
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    echo "prepare: installing $* (apt-get)" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if ! command -v cargo >/dev/null 2>&1; then
    echo "prepare: cargo not found; install Rust with rustup (https://rustup.rs) first" >&2
    exit 1
fi

if command -v dpkg-query >/dev/null 2>&1; then
    cairn_missing=()
    for package in "${CAIRN_BUILD_PACKAGES[@]}"; do
        cairn_package_installed "$package" || cairn_missing+=("$package")
    done
    if [ "${#cairn_missing[@]}" -gt 0 ]; then
        cairn_install_packages "${cairn_missing[@]}"
    fi
    unset cairn_missing package
else
    echo "prepare: not a Debian machine; make sure libclang (for bindgen) and protoc are installed" >&2
fi

# Prove them usable now rather than 5 minutes into the RocksDB build.
"$(dirname "${BASH_SOURCE[0]}")/check-prerequisites.sh"

target_dir="${CAIRN_TARGET_DIR:-/var/cache/cairn/target}"
if mkdir -p "$target_dir" 2>/dev/null && [ -w "$target_dir" ]; then
    export CARGO_TARGET_DIR="$target_dir"
else
    export CARGO_TARGET_DIR="$PWD/target"
fi
echo "prepare: build output in $CARGO_TARGET_DIR" >&2

# RocksDB's C++ is compiled once per machine and linked by every profile and target.
source "$(dirname "${BASH_SOURCE[0]}")/rocksdb.sh"
cairn_rocksdb_prepare

# The one build both README commands run: every target of the workspace with one feature set,
# so that running local-cluster.sh after test.sh (or the other way round) compiles nothing
# again (issue 13). `cargo build --bin ...` alone would resolve features without the
# dev-dependencies and rebuild a dozen crates.
cairn_build() {
    cargo build --workspace --all-targets --locked "$@"
}
