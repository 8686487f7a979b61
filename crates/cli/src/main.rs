//! `cairnctl`: parses nothing itself; everything is in the library's `run`, so tests run
//! exactly what users run. Only the trace exporter, a process-wide subscriber, is set up here.

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // Lossy rather than a panic on arguments that are not UTF-8: clap reports them.
    let args = std::env::args_os()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    // Trace export, when `CAIRN_TRACING__OTLP_ENDPOINT` asks for it (docs/observability.md).
    let telemetry = match cairn_cli::trace_export::start() {
        Ok(telemetry) => telemetry,
        Err(message) => {
            eprintln!("error: {message}");
            std::process::exit(cairn_cli::exit::USAGE);
        }
    };
    let code = cairn_cli::run(args, &mut std::io::stdout(), &mut std::io::stderr()).await;
    telemetry.shutdown().await;
    std::process::exit(code);
}
