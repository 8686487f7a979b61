//! `cairnctl`, the command-line client for Cairn, as a library so that tests can run it
//! in-process through [`run`].
//!
//! It is a thin layer over the `cairn-client` SDK: parse arguments (`args`), make one SDK
//! call, render the result (`output`) and map failures to exit codes (`exit`). It must not
//! talk gRPC or depend on server crates itself; everything cluster-facing goes through the
//! SDK, which also does the retrying.
//!
//! ```text
//! cairnctl [--endpoints host:port,...] [--output table|json] [--timeout 5s] <command>
//!
//!   put KEY VALUE [--prev-kv]
//!   get KEY [--serializable] [--keys-only]
//!   del KEY [--prev-kv]
//!   scan [--prefix P | --start S [--end E]] [--limit N] [--keys-only] [--count] [--serializable]
//!   txn [--if CMP]... [--then REQ]... [--else REQ]... | txn [--file F | -i]   (etcdctl's format)
//!   txn cas KEY --value NEW (--expect-value V | --expect-version N | --expect-mod-revision N)
//!   txn put-if-absent KEY VALUE
//!   cluster status|members|shards
//!   join ADDRESS [--label k=v]...
//!   leave NODE_ID
//!   user add|delete|list|passwd|grant-role|revoke-role ...
//!   role add|delete|list|grant-permission|revoke-permission ...
//!   auth enable|disable|status
//! ```
//!
//! `--user NAME[:PASSWORD]` signs in (password from `CAIRN_PASSWORD` or a prompt when not
//! given); `--cacert`, `--cert`, `--key` set up TLS (docs/security.md).
//!
//! `--endpoints` defaults to `$CAIRN_ENDPOINTS`, else `127.0.0.1:7000`.
//!
//! Output: `table` prints aligned columns under a header row; `json` prints exactly one
//! JSON document per command (`get` prints the key-value object, or `null` when absent).
//! Keys and values print as text when valid UTF-8, else as `0x` hex (tables also use hex
//! for text holding control characters).
//!
//! Exit codes:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | the request failed: no gateway reachable, timeout, rejected by the cluster, or a transaction that kept conflicting |
//! | 2 | usage error or invalid argument, including a request over a cluster limit, a `txn` that does not parse, or a transaction across shards refused by an older gateway |
//! | 3 | key not found (`get`) |
//! | 4 | condition failed: `txn cas` / `txn put-if-absent` did not write; `txn`: a comparison did not hold (FAILURE) |
//!
//! Failures print one line to stderr starting with `error: ` that says what to do.
//!
//! Each command runs in a `cairnctl <command>` span (the root of its trace when trace export
//! is configured, see `trace_export`), so its calls to the gateway are one trace.

pub mod args;
pub mod auth;
pub mod exit;
pub mod output;
pub mod recovery;
pub mod table;
pub mod trace_export;
pub mod txn_output;
pub mod txn_script;

use args::{
    Cli, ClusterCommand, Command, DevCommand, Expect, OutputFormat, ScanArgs, TxnArgs, TxnCommand,
    UnsafeCommand, SCAN_PAGE_KEYS,
};
use cairn_client::{
    Client, ClientConfig, Consistency, DeleteOptions, Error, Expectation, GetOptions, NodeId,
    PutOptions, RangeOptions, TlsConfig, Txn,
};
use clap::Parser;
use output::{bytes_cell, Report};
use std::io::Write;
use std::time::Duration;
use tracing::Instrument;

/// Longest time to open a connection to one gateway, so that a dead first gateway leaves
/// time to try the others within `--timeout`.
const CONNECT_TIMEOUT_MAX: Duration = Duration::from_secs(3);

/// Runs one `cairnctl` invocation. `args` includes the program name, as `std::env::args`
/// does. Output goes to `out`, diagnostics to `err`; returns the process exit code.
pub async fn run(args: Vec<String>, out: &mut impl Write, err: &mut impl Write) -> i32 {
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(error) => {
            // Help and version go to stdout with code 0; usage errors to stderr with 2.
            let text = error.render().to_string();
            let stream: &mut dyn Write = if error.use_stderr() { err } else { out };
            let _ = stream.write_all(text.as_bytes());
            return error.exit_code();
        }
    };
    if let Command::Dev(DevCommand::Certs { out: dir, hosts }) = &cli.command {
        return dev_certs(dir, hosts, out, err);
    }
    let tls = match tls_config(&cli) {
        Ok(tls) => tls,
        Err(message) => {
            let _ = writeln!(err, "error: {message}");
            return exit::USAGE;
        }
    };
    let credentials = match cli.user.as_deref().map(auth::credentials).transpose() {
        Ok(credentials) => credentials,
        Err(message) => {
            let _ = writeln!(err, "error: {message}");
            return exit::USAGE;
        }
    };
    // A transaction is read and parsed before anything connects: a mistake in it is the
    // user's to fix, whatever the cluster's state.
    let txn = match &cli.command {
        Command::Txn(args @ TxnArgs { shortcut: None, .. }) => match read_txn(args, err) {
            Ok(txn) => Some(txn),
            Err(message) => {
                let _ = writeln!(err, "error: {message}");
                return exit::USAGE;
            }
        },
        _ => None,
    };
    let config = ClientConfig {
        endpoints: cli.endpoints.clone(),
        request_timeout: cli.timeout,
        connect_timeout: cli.timeout.min(CONNECT_TIMEOUT_MAX),
        tls,
        credentials,
        ..ClientConfig::default()
    };
    let span = tracing::info_span!(
        "cairnctl",
        otel.name = %format_args!("cairnctl {}", cli.command.name()),
        otel.kind = "client",
    );
    let result = async {
        match Client::connect(config).await {
            Ok(client) => execute(&client, &cli.command, txn).await,
            Err(error) => Err(error),
        }
    }
    .instrument(span)
    .await;
    let report = match result {
        Ok(report) => report,
        Err(error) => {
            let _ = writeln!(err, "{}", exit::error_line(&error, cli.timeout));
            return exit::exit_code(&error);
        }
    };
    let rendered = report.render(cli.output);
    if let Err(error) = out
        .write_all(rendered.as_bytes())
        .and_then(|()| out.flush())
    {
        let _ = writeln!(err, "error: cannot write the output: {error}");
        return exit::REQUEST_FAILED;
    }
    if let (Report::Scan { more: true, .. }, OutputFormat::Table) = (&report, cli.output) {
        let _ = writeln!(
            err,
            "note: more keys remain after the last row; raise --limit or narrow the range"
        );
    }
    match unsuccessful_outcome(&report) {
        Some((code, message)) => {
            let _ = writeln!(err, "error: {message}");
            code
        }
        None => exit::SUCCESS,
    }
}

/// The transaction of `cairnctl txn`: from --if/--then/--else, else from --file, else from
/// stdin (prompting on `err` with -i, or when stdin is a terminal).
fn read_txn(args: &TxnArgs, err: &mut impl Write) -> Result<Txn, String> {
    use std::io::IsTerminal;
    let script = if args.has_arguments() {
        txn_script::from_arguments(&args.compares, &args.success, &args.failure)
            .map_err(|error| error.to_string())?
    } else {
        match args.file.as_deref() {
            Some(path) if path != std::path::Path::new("-") => {
                let text = read_bounded(std::fs::File::open(path), txn_script::SCRIPT_BYTES_MAX)
                    .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
                txn_script::parse(&text).map_err(|error| format!("{}, {error}", path.display()))?
            }
            _ => {
                let stdin = std::io::stdin();
                let prompting = args.interactive || (args.file.is_none() && stdin.is_terminal());
                let mut prompt = |text: &str| {
                    if prompting {
                        let _ = writeln!(err, "{text}");
                    }
                };
                // Interactively, reading stops at the blank line after the failure requests;
                // from a pipe, everything up to the end must belong to the transaction.
                txn_script::read(stdin.lock(), &mut prompt, !prompting)
                    .map_err(|error| format!("stdin, {error}"))?
            }
        }
    };
    Ok(script.into_txn())
}

/// A file's text, refused past `bytes_max` rather than read whole into memory.
fn read_bounded(file: std::io::Result<std::fs::File>, bytes_max: usize) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    file?.take(bytes_max as u64 + 1).read_to_string(&mut text)?;
    if text.len() > bytes_max {
        return Err(std::io::Error::other(format!(
            "longer than {bytes_max} bytes"
        )));
    }
    Ok(text)
}

/// The SDK's TLS settings from --cacert, --cert and --key.
fn tls_config(cli: &Cli) -> Result<Option<TlsConfig>, String> {
    let identity = match (&cli.cert, &cli.key) {
        (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
        (None, None) => None,
        _ => return Err("--cert and --key go together".to_string()),
    };
    match &cli.cacert {
        Some(ca_file) => Ok(Some(TlsConfig {
            ca_file: ca_file.clone(),
            identity,
        })),
        None if identity.is_some() => {
            Err("--cert needs --cacert (the CA that signed the gateway's certificate)".into())
        }
        None => Ok(None),
    }
}

/// `cairnctl dev certs`: a CA and certificates for a local TLS cluster.
fn dev_certs(
    dir: &std::path::Path,
    hosts: &[String],
    out: &mut impl Write,
    err: &mut impl Write,
) -> i32 {
    let written = cairn_tls::dev_certs::DevCa::new("Cairn development CA")
        .map_err(std::io::Error::other)
        .and_then(|ca| ca.write_cluster(dir, hosts));
    match written {
        Ok(files) => {
            for file in files {
                let _ = writeln!(out, "{}", file.display());
            }
            let _ = writeln!(
                out,
                "cairnctl flags: --cacert {0}/ca.pem --cert {0}/client.pem --key {0}/client-key.pem",
                dir.display()
            );
            exit::SUCCESS
        }
        Err(error) => {
            let _ = writeln!(
                err,
                "error: cannot write certificates to {}: {error}",
                dir.display()
            );
            exit::REQUEST_FAILED
        }
    }
}

/// Answers that are not failures of the request but still not a success for the caller:
/// a missing key for `get`, a condition that did not hold.
fn unsuccessful_outcome(report: &Report) -> Option<(i32, String)> {
    match report {
        Report::Get { key, kv: None, .. } => {
            Some((exit::NOT_FOUND, format!("key {} not found", quoted(key))))
        }
        Report::Txn(response) if !response.succeeded => Some((
            exit::CONDITION_FAILED,
            "a comparison did not hold: the failure requests ran (FAILURE)".to_string(),
        )),
        Report::Cas { key, outcome } if !outcome.succeeded => {
            let state = match &outcome.current {
                Some(kv) => format!(
                    "key {} is at version {}, mod_revision {}",
                    quoted(key),
                    kv.version,
                    kv.mod_revision
                ),
                None => format!("key {} does not exist", quoted(key)),
            };
            Some((
                exit::CONDITION_FAILED,
                format!("condition failed, nothing was written: {state}"),
            ))
        }
        _ => None,
    }
}

fn quoted(bytes: &[u8]) -> String {
    format!("{:?}", bytes_cell(bytes))
}

/// Makes the SDK call a command stands for; `txn` is the transaction `cairnctl txn` read.
async fn execute(client: &Client, command: &Command, txn: Option<Txn>) -> Result<Report, Error> {
    let report = match command {
        Command::Put {
            key,
            value,
            prev_kv,
        } => {
            let options = PutOptions {
                prev_kv: *prev_kv,
                condition: None,
            };
            let response = client
                .put_with(key.as_str(), value.as_str(), options)
                .await?;
            Report::Put {
                key: key.clone().into_bytes(),
                response,
                show_prev: *prev_kv,
            }
        }
        Command::Get {
            key,
            serializable,
            keys_only,
            revision,
        } => {
            let options = GetOptions {
                consistency: consistency(*serializable),
                keys_only: *keys_only,
                revision: *revision,
            };
            Report::Get {
                key: key.clone().into_bytes(),
                kv: client.get_with(key.as_str(), options).await?,
                keys_only: *keys_only,
            }
        }
        Command::Del { key, prev_kv } => {
            let options = DeleteOptions { prev_kv: *prev_kv };
            Report::Delete {
                key: key.clone().into_bytes(),
                response: client.delete_with(key.as_str(), options).await?,
                show_prev: *prev_kv,
            }
        }
        Command::Scan(scan) => scan_report(client, scan).await?,
        Command::Txn(TxnArgs { shortcut: None, .. }) => {
            let txn = txn.expect("run reads the transaction before connecting");
            Report::Txn(client.txn(txn).await?)
        }
        Command::Txn(TxnArgs {
            shortcut: Some(TxnCommand::Cas { key, value, expect }),
            ..
        }) => Report::Cas {
            key: key.clone().into_bytes(),
            outcome: client
                .compare_and_set(key.as_str(), expectation(expect), value.as_str())
                .await?,
        },
        Command::Txn(TxnArgs {
            shortcut: Some(TxnCommand::PutIfAbsent { key, value }),
            ..
        }) => Report::Cas {
            key: key.clone().into_bytes(),
            outcome: client.put_if_absent(key.as_str(), value.as_str()).await?,
        },
        Command::Cluster(ClusterCommand::Status) => Report::Status(client.status().await?),
        Command::Cluster(ClusterCommand::Members) => Report::Members(client.members().await?),
        Command::Cluster(ClusterCommand::Shards) => Report::Shards(client.shards().await?),
        Command::Join { address, labels } => Report::Join {
            node_id: client
                .join(address.as_str(), labels.iter().cloned())
                .await?
                .get(),
        },
        Command::Compact { revision } => Report::Compact {
            compact_revision: client.compact(*revision).await?,
        },
        Command::Unsafe(UnsafeCommand::RecoverShard {
            shard, from_node, ..
        }) => Report::Recovered(
            client
                .unsafe_recover_shard(*shard, NodeId(*from_node))
                .await?,
        ),
        Command::Leave { node_id } => Report::Leave {
            node_id: *node_id,
            draining: client.leave(NodeId(*node_id)).await?,
        },
        Command::User(command) => Report::Auth(auth::user(client, command).await?),
        Command::Role(command) => Report::Auth(auth::role(client, command).await?),
        Command::Auth(command) => Report::Auth(auth::auth(client, command).await?),
        Command::Dev(_) => unreachable!("dev commands run before a client is made"),
    };
    Ok(report)
}

async fn scan_report(client: &Client, scan: &ScanArgs) -> Result<Report, Error> {
    let mut options = match (&scan.prefix, &scan.start) {
        (Some(prefix), _) => RangeOptions::for_prefix(prefix.as_str()),
        (None, Some(start)) => {
            RangeOptions::for_range(start.as_str(), scan.end.as_deref().unwrap_or(""))
        }
        // Neither: the whole key space.
        (None, None) => RangeOptions::default(),
    };
    options.consistency = consistency(scan.serializable);
    options.revision = scan.revision;
    if scan.count {
        options.count_only = true;
        let response = client.range(options).await?;
        return Ok(Report::Count {
            count: response.count,
        });
    }
    options.keys_only = scan.keys_only;
    options.limit = SCAN_PAGE_KEYS.min(scan.limit);
    let rows_max = usize::try_from(scan.limit).unwrap_or(usize::MAX);
    let result = client.scan(options, rows_max).await?;
    Ok(Report::Scan {
        kvs: result.kvs,
        more: result.more,
        keys_only: scan.keys_only,
        revision: result.revision,
    })
}

fn consistency(serializable: bool) -> Consistency {
    if serializable {
        Consistency::Serializable
    } else {
        Consistency::Linearizable
    }
}

fn expectation(expect: &Expect) -> Expectation {
    match (
        &expect.expect_value,
        expect.expect_version,
        expect.expect_mod_revision,
    ) {
        (Some(value), None, None) => Expectation::Value(value.clone().into_bytes()),
        (None, Some(version), None) => Expectation::Version(version),
        (None, None, Some(revision)) => Expectation::ModRevision(revision),
        _ => unreachable!("clap requires exactly one expectation: {expect:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_client::{proto, CasOutcome};

    async fn run_captured(args: &[&str]) -> (i32, String, String) {
        let args = std::iter::once("cairnctl")
            .chain(args.iter().copied())
            .map(String::from)
            .collect();
        let mut out = Vec::new();
        let mut err = Vec::new();
        let code = run(args, &mut out, &mut err).await;
        (
            code,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    #[tokio::test]
    async fn usage_errors_exit_2() {
        let (code, out, err) = run_captured(&["get"]).await;
        assert_eq!(code, 2);
        assert!(out.is_empty());
        assert!(err.starts_with("error: "), "{err}");
        let (code, _, _) = run_captured(&["frobnicate"]).await;
        assert_eq!(code, 2);
    }

    #[tokio::test]
    async fn help_documents_exit_codes_and_exits_0() {
        let (code, out, _) = run_captured(&["--help"]).await;
        assert_eq!(code, 0);
        assert!(out.contains("EXIT CODES"), "{out}");
        assert!(out.contains("4  condition failed"), "{out}");
        assert!(out.contains("0x prefix"), "{out}");
    }

    #[tokio::test]
    async fn malformed_endpoint_is_a_usage_error() {
        let (code, out, err) = run_captured(&["--endpoints", "no-port", "get", "k"]).await;
        assert_eq!(code, 2);
        assert!(out.is_empty());
        assert!(
            err.starts_with("error: invalid argument `endpoints`"),
            "{err}"
        );
        assert!(err.contains("CAIRN_ENDPOINTS"), "{err}");
        assert_eq!(err.lines().count(), 1);
    }

    #[tokio::test]
    async fn unreachable_cluster_exits_1_with_a_hint() {
        // Port 1 on loopback: nothing listens, connections are refused at once.
        let (code, out, err) =
            run_captured(&["--endpoints", "127.0.0.1:1", "--timeout", "3s", "get", "k"]).await;
        assert_eq!(code, 1);
        assert!(out.is_empty());
        assert!(
            err.starts_with("error: cannot reach any gateway at 127.0.0.1:1"),
            "{err}"
        );
        assert!(err.contains("scripts/local-cluster.sh"), "{err}");
        assert_eq!(err.lines().count(), 1);
    }

    #[test]
    fn missing_key_exits_3() {
        let report = Report::Get {
            key: b"k".to_vec(),
            kv: None,
            keys_only: false,
        };
        let (code, message) = unsuccessful_outcome(&report).expect("not a success");
        assert_eq!(code, 3);
        assert_eq!(message, "key \"k\" not found");
    }

    #[test]
    fn failed_condition_exits_4() {
        let failed = Report::Cas {
            key: b"k".to_vec(),
            outcome: CasOutcome {
                succeeded: false,
                current: Some(proto::KeyValue {
                    key: b"k".to_vec(),
                    version: 2,
                    mod_revision: 9,
                    ..Default::default()
                }),
                revision: 9,
            },
        };
        let (code, message) = unsuccessful_outcome(&failed).expect("not a success");
        assert_eq!(code, 4);
        assert!(message.contains("version 2, mod_revision 9"), "{message}");
        let succeeded = Report::Cas {
            key: b"k".to_vec(),
            outcome: CasOutcome {
                succeeded: true,
                current: None,
                revision: 9,
            },
        };
        assert_eq!(unsuccessful_outcome(&succeeded), None);
        let found = Report::Get {
            key: b"k".to_vec(),
            kv: Some(proto::KeyValue::default()),
            keys_only: false,
        };
        assert_eq!(unsuccessful_outcome(&found), None);
    }

    #[test]
    fn expectations_map_one_to_one() {
        let expect = Expect {
            expect_value: None,
            expect_version: None,
            expect_mod_revision: Some(12),
        };
        assert_eq!(expectation(&expect), Expectation::ModRevision(12));
        let expect = Expect {
            expect_value: Some("old".into()),
            expect_version: None,
            expect_mod_revision: None,
        };
        assert_eq!(expectation(&expect), Expectation::Value(b"old".to_vec()));
    }
}
