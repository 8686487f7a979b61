#!/usr/bin/env bash
# Proves that every system prerequisite scripts/lib/prepare.sh claims to provide is usable,
# and fails at once with the missing piece named when one is not (issue 13: a check that looked
# for the wrong file let a new machine start a RocksDB build that died 5 minutes in).
#
# It deliberately shares no logic with prepare.sh: prepare.sh asks dpkg which packages are
# installed; this script uses the prerequisites the way the build does.
# - libclang: found the way bindgen's clang-sys finds it (LIBCLANG_PATH, `llvm-config
#   --libdir`, then the system library folders; libclang-cpp is not libclang), loaded, and
#   made to parse a C file that includes the standard headers RocksDB's C API needs.
# - protoc: compiles a proto file importing protobuf's own well-known protos, as etcd-client's
#   build script does.
# - libfaketime: the library the oracle's clock tests preload, found where they look for it
#   and shown to step a real process's clock back.
# - cargo: on the PATH.
set -euo pipefail

fail() {
    echo "prerequisites: $*" >&2
    exit 1
}

command -v cargo >/dev/null 2>&1 || fail "cargo is missing: install Rust with rustup (https://rustup.rs)"
command -v python3 >/dev/null 2>&1 || fail "python3 is missing: it is needed to probe libclang (Debian package python3)"

libclang_report="$(python3 - <<'PY'
import ctypes, glob, os, shutil, subprocess, sys, tempfile

def candidate_dirs():
    if os.environ.get("LIBCLANG_PATH"):
        yield os.environ["LIBCLANG_PATH"]
    llvm_config = os.environ.get("LLVM_CONFIG_PATH") or shutil.which("llvm-config")
    if llvm_config:
        try:
            yield subprocess.run([llvm_config, "--libdir"], capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            pass
    for pattern in ("/usr/local/lib*", "/usr/local/llvm*/lib*", "/usr/lib*", "/usr/lib*/*", "/usr/lib*/*/*"):
        yield from sorted(glob.glob(pattern))

def candidate_files():
    seen = set()
    for directory in candidate_dirs():
        for name in ("libclang.so", "libclang-*.so", "libclang.so.*", "libclang-*.so.*"):
            for path in sorted(glob.glob(os.path.join(directory, name))):
                base = os.path.basename(path)
                if base.startswith("libclang-cpp") or path in seen:
                    continue
                seen.add(path)
                yield path

source = b"#include <stddef.h>\n#include <stdint.h>\n#include <stdbool.h>\n#include <stdarg.h>\nint main(void) { return (int)sizeof(size_t) + (int)INT8_MAX; }\n"
tried = []
for path in candidate_files():
    try:
        lib = ctypes.CDLL(path)
        create_index = lib.clang_createIndex
    except (OSError, AttributeError) as error:
        tried.append(f"{path} ({error})")
        continue
    create_index.restype = ctypes.c_void_p
    lib.clang_parseTranslationUnit.restype = ctypes.c_void_p
    lib.clang_parseTranslationUnit.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
    lib.clang_getNumDiagnostics.argtypes = [ctypes.c_void_p]
    lib.clang_getDiagnostic.restype = ctypes.c_void_p
    lib.clang_getDiagnostic.argtypes = [ctypes.c_void_p, ctypes.c_uint]
    lib.clang_getDiagnosticSeverity.argtypes = [ctypes.c_void_p]
    with tempfile.TemporaryDirectory() as folder:
        file = os.path.join(folder, "probe.c")
        with open(file, "wb") as out:
            out.write(source)
        index = create_index(0, 0)
        unit = lib.clang_parseTranslationUnit(index, file.encode(), None, 0, None, 0, 0)
        if not unit:
            tried.append(f"{path} (could not parse a C file)")
            continue
        errors = [i for i in range(lib.clang_getNumDiagnostics(unit)) if lib.clang_getDiagnosticSeverity(lib.clang_getDiagnostic(unit, i)) >= 3]
        if errors:
            tried.append(f"{path} (loads, but cannot find the standard C headers such as stddef.h: clang's resource headers from libclang-common are missing)")
            continue
    print(f"ok {path}")
    sys.exit(0)
print("missing " + ("; ".join(tried) if tried else "no libclang.so anywhere bindgen looks (libclang-cpp is a different library)"))
sys.exit(0)
PY
)"
case "$libclang_report" in
    ok*) ;;
    *) fail "libclang is not usable by bindgen (RocksDB's build needs it; Debian package libclang-dev): ${libclang_report#missing }" ;;
esac

command -v protoc >/dev/null 2>&1 || fail "protoc is missing (etcd-client's build script needs it; Debian package protobuf-compiler)"
probe_dir="$(mktemp -d)"
trap 'rm -rf "$probe_dir"' EXIT
# etcd-client's protos import protobuf's own (descriptor.proto, struct.proto), which protoc
# finds only when libprotobuf-dev installed them under /usr/include.
printf 'syntax = "proto3";\npackage probe;\nimport "google/protobuf/descriptor.proto";\nimport "google/protobuf/struct.proto";\nmessage Probe { google.protobuf.Value value = 1; google.protobuf.FieldOptions options = 2; }\n' >"$probe_dir/probe.proto"
protoc --proto_path="$probe_dir" --descriptor_set_out="$probe_dir/probe.pb" "$probe_dir/probe.proto" 2>"$probe_dir/err" ||
    fail "protoc cannot compile a proto file that imports protobuf's own descriptor.proto and struct.proto: $(cat "$probe_dir/err") (Debian packages protobuf-compiler and libprotobuf-dev)"

faketime_lib="$(ls /usr/lib/*/faketime/libfaketime.so.1 /usr/lib/faketime/libfaketime.so.1 2>/dev/null | head -n 1 || true)"
[ -n "$faketime_lib" ] || fail "libfaketime.so.1 is missing (the oracle's clock tests preload it; Debian package faketime)"
now="$(date +%s)"
stepped="$(LD_PRELOAD="$faketime_lib" FAKETIME="-1d" date +%s)"
[ "$stepped" -lt "$((now - 3600))" ] ||
    fail "$faketime_lib did not step the clock of a process back (date said $stepped, now is $now)"

echo "prerequisites: libclang ${libclang_report#ok }, $(protoc --version), libfaketime ${faketime_lib}, $(cargo --version)" >&2
