# Sourced by scripts/lib/prepare.sh: compiles RocksDB's C++ once per machine and lets every
# build link that one library (D30 in docs/decisions.md).
#
# librocksdb-sys compiles RocksDB (about 18 minutes on two cores) into each profile's and each
# target's own build folder, so the test build, the release build of the benchmarks and the
# static build of the container image would compile it three times. Here it is compiled once,
# by librocksdb-sys's own build script in the release profile (the settings a release build
# would use: same RocksDB version, same defines and features, -O3), the archive is kept under
# CAIRN_CACHE_DIR/rocksdb/<key>/, and ROCKSDB_LIB_DIR + ROCKSDB_STATIC make every later build
# link it (librocksdb-sys still generates its bindings with bindgen). The key names the
# librocksdb-sys version from Cargo.lock, the crate features, and the C++ compiler, so a
# version bump or a new compiler compiles it again.
#
# Needs: CARGO_TARGET_DIR set, run from the workspace root. Set CAIRN_ROCKSDB_SHARED=0 to skip
# this and let librocksdb-sys compile RocksDB per build folder as it does by default.

cairn_rocksdb_prepare() {
    if [ "${CAIRN_ROCKSDB_SHARED:-1}" = "0" ]; then
        unset ROCKSDB_LIB_DIR ROCKSDB_STATIC
        return 0
    fi
    local version features compiler key cache_root folder lock build_dir archive
    version="$(awk '/^name = "librocksdb-sys"$/ { getline; gsub(/"/, "", $3); print $3 }' Cargo.lock)"
    if [ -z "$version" ]; then
        echo "prepare: librocksdb-sys is not in Cargo.lock; cannot share a compiled RocksDB" >&2
        return 1
    fi
    # The features our workspace turns on (Cargo.toml's rocksdb line) shape the C++ build.
    features="$(grep -E '^rocksdb = ' Cargo.toml | sed -E 's/.*features = \[([^]]*)\].*/\1/' | tr -d ' "')"
    compiler="$(${CXX:-c++} --version 2>/dev/null | head -n 1)"
    key="$(printf '%s|%s|%s|%s' "$version" "$features" "$compiler" "$(uname -m)" | sha256sum | cut -c1-16)"
    cache_root="${CAIRN_CACHE_DIR:-$(dirname "$CARGO_TARGET_DIR")}"
    folder="$cache_root/rocksdb/$version-$key"
    archive="$folder/lib/librocksdb.a"
    if [ ! -f "$archive" ]; then
        mkdir -p "$folder"
        lock="$folder/.lock"
        (
            # Two scripts started at once must not both compile it.
            flock -w 3600 9 || { echo "prepare: timed out waiting for another RocksDB build ($lock)" >&2; exit 1; }
            if [ -f "$archive" ]; then exit 0; fi
            echo "prepare: compiling RocksDB $version once for every build on this machine (about 18 minutes on 2 cores) into $folder" >&2
            build_dir="$folder/build"
            started=$SECONDS
            env -u ROCKSDB_LIB_DIR -u ROCKSDB_STATIC CARGO_TARGET_DIR="$build_dir" \
                cargo build --locked --release --quiet -p librocksdb-sys >&2 || exit 1
            built="$(find "$build_dir/release/build" -path '*/librocksdb-sys-*/out/librocksdb.a' -print -quit)"
            if [ -z "$built" ]; then
                echo "prepare: librocksdb-sys built no librocksdb.a (looked under $build_dir/release/build)" >&2
                exit 1
            fi
            mkdir -p "$folder/lib"
            cp "$built" "$archive.partial"
            mv "$archive.partial" "$archive"
            rm -rf "$build_dir"
            echo "prepare: RocksDB compiled in $((SECONDS - started)) s: $archive" >&2
        ) 9>"$lock" || return 1
    fi
    export ROCKSDB_LIB_DIR="$folder/lib"
    export ROCKSDB_STATIC=1
}
