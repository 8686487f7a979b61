//! Compiles `proto/` with protox (a protobuf compiler in pure Rust), so building Cairn never
//! needs a hand-installed `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time, not compiled in: a build script binary reused from a shared target
    // directory may have been compiled for a checkout at another path.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let root = std::path::Path::new(&manifest_dir).join("../../proto");
    let files = [
        "cairn/kv/v1/kv.proto",
        "cairn/node/v1/node.proto",
        "cairn/raft/v1/raft.proto",
        "cairn/coordinator/v1/coordinator.proto",
    ];
    let descriptors = protox::compile(files, [&root])?;
    tonic_prost_build::configure()
        .bytes(".cairn.raft.v1")
        .compile_fds(descriptors)?;
    for file in files {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    Ok(())
}
