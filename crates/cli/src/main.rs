//! `cairnctl`: parses nothing itself; everything is in the library's `run`, so tests run
//! exactly what users run.

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // Lossy rather than a panic on arguments that are not UTF-8: clap reports them.
    let args = std::env::args_os()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    let code = cairn_cli::run(args, &mut std::io::stdout(), &mut std::io::stderr()).await;
    std::process::exit(code);
}
