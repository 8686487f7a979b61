//! The command line, as clap types. Parsing only: nothing here talks to a cluster.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

mod txn;

use txn::TXN_HELP;
pub use txn::{Expect, TxnArgs, TxnCommand};

/// Rows `scan` prints when `--limit` is not given.
pub const SCAN_ROWS_DEFAULT: u64 = 1_000;
/// Keys fetched per range request while scanning.
pub const SCAN_PAGE_KEYS: u64 = 500;

const FOOTER: &str = "\
OUTPUT:
  --output table (default) prints aligned columns with a header row; cluster status prints
  one `field value` line per field. --output json prints exactly one JSON document per
  command on stdout, e.g. get: {\"key\":..,\"value\":..,\"create_revision\":..,
  \"mod_revision\":..,\"version\":..} or null when the key is absent. Keys and values are
  printed as text when they are valid UTF-8 (in tables: and hold no control characters),
  otherwise as hex with a 0x prefix.

EXIT CODES:
  0  success
  1  the request failed: no gateway reachable, timeout, rejected by the cluster, or a
     transaction that kept conflicting with other writes
  2  usage error or invalid argument (including a request over a cluster limit, a txn that
     does not parse, or a transaction across shards refused by an older gateway)
  3  key not found (get)
  4  condition failed: cas / put-if-absent did not write; txn: a comparison did not hold

TLS:
  --cacert FILE turns TLS on (an https:// endpoint needs it); --cert and --key present a
  client certificate to gateways that ask for one. See docs/security.md.

AUTH:
  --user NAME[:PASSWORD] signs in as NAME (a token from the gateway rides with the request).
  Without :PASSWORD the password comes from CAIRN_PASSWORD, else a prompt that does not echo.
  A client certificate's common name is the user when --user is not given.

ENVIRONMENT:
  CAIRN_ENDPOINTS  default for --endpoints (comma-separated host:port)
  CAIRN_CACERT, CAIRN_CERT, CAIRN_KEY  defaults for --cacert, --cert, --key
  CAIRN_USER       default for --user; CAIRN_PASSWORD  its password";

/// Command-line client for a Cairn cluster.
#[derive(Debug, Parser)]
#[command(name = "cairnctl", version, after_help = FOOTER)]
pub struct Cli {
    /// Gateway addresses, comma-separated host:port.
    #[arg(
        long,
        global = true,
        env = "CAIRN_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:7000"
    )]
    pub endpoints: Vec<String>,

    /// table: aligned columns for people; json: one JSON document for scripts.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,

    /// Time allowed for the whole request, retries included (e.g. 500ms, 5s, 1m).
    #[arg(long, global = true, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// PEM certificate of the CA that signed the gateways' certificates: TLS is on when set
    /// (https:// endpoints need it).
    #[arg(long, global = true, env = "CAIRN_CACERT", value_name = "FILE")]
    pub cacert: Option<PathBuf>,

    /// PEM client certificate, for gateways that ask for one (with --key).
    // The ids differ from the field names: `key` is also `put`'s positional argument.
    #[arg(
        long = "cert",
        id = "tls_cert",
        global = true,
        env = "CAIRN_CERT",
        value_name = "FILE"
    )]
    pub cert: Option<PathBuf>,

    /// PEM private key of --cert.
    #[arg(
        long = "key",
        id = "tls_key",
        global = true,
        env = "CAIRN_KEY",
        value_name = "FILE"
    )]
    pub key: Option<PathBuf>,

    /// Sign in as NAME (password after a colon, from CAIRN_PASSWORD, or prompted).
    // An id of its own: a global argument shares its id with every subcommand's, and
    // `user grant-role USER ROLE` has a positional `user` that would otherwise fill this one.
    #[arg(
        id = "signed_in_user",
        long = "user",
        global = true,
        env = "CAIRN_USER",
        value_name = "NAME[:PASSWORD]",
        hide_env_values = true
    )]
    pub user: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

#[derive(Debug, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Write VALUE under KEY.
    Put {
        key: String,
        value: String,
        /// Also print the key as it was before the write.
        #[arg(long)]
        prev_kv: bool,
    },
    /// Read KEY (exit code 3 when it does not exist).
    Get {
        key: String,
        /// Read from any replica: faster, possibly stale.
        #[arg(long)]
        serializable: bool,
        /// Print the key's metadata without its value.
        #[arg(long)]
        keys_only: bool,
        /// Read the key as it was at revision N (0 = the latest).
        #[arg(long = "rev", value_name = "N", default_value_t = 0)]
        revision: u64,
    },
    /// Delete KEY.
    #[command(alias = "delete")]
    Del {
        key: String,
        /// Also print the key as it was before the delete.
        #[arg(long)]
        prev_kv: bool,
    },
    /// List keys by prefix or range, following pages until --limit rows or the end.
    Scan(ScanArgs),
    /// Run a transaction over any keys: comparisons, then the success requests if they all
    /// hold, else the failure requests (etcdctl's txn format); or the `cas` and
    /// `put-if-absent` shortcuts.
    #[command(args_conflicts_with_subcommands = true, after_help = TXN_HELP)]
    Txn(TxnArgs),
    /// Cluster health, members and shards.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Register a storage node that will listen at ADDRESS; prints its node id.
    Join {
        address: String,
        /// A placement label, e.g. --label zone=eu-1 (repeatable).
        #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
        labels: Vec<(String, String)>,
    },
    /// Drain NODE_ID: move its replicas elsewhere, then mark it left.
    Leave { node_id: u64 },
    /// Discard the history below REVISION: reads below it fail from then on.
    Compact { revision: u64 },
    /// Operations that may lose acknowledged writes; read docs/operations.md first.
    #[command(subcommand)]
    Unsafe(UnsafeCommand),
    /// Tools for local development (not for production).
    #[command(subcommand)]
    Dev(DevCommand),
    /// Users: add, delete, list, change a password, grant and revoke roles.
    #[command(subcommand)]
    User(UserCommand),
    /// Roles and their permissions on keys, prefixes and ranges.
    #[command(subcommand)]
    Role(RoleCommand),
    /// Turn authentication and authorization on or off, or show whether they are on.
    #[command(subcommand)]
    Auth(AuthCommand),
}

#[derive(Debug, PartialEq, Eq, Subcommand)]
pub enum UserCommand {
    /// Add a user; the password after a colon, else prompted (twice, not echoed).
    Add {
        #[arg(value_name = "NAME[:PASSWORD]")]
        name: String,
        /// The user signs in with a client certificate only (its common name is NAME).
        #[arg(long)]
        no_password: bool,
    },
    /// Delete a user.
    Delete { name: String },
    /// Every user and its roles.
    List,
    /// Change a user's password (every token issued for the old one stops working).
    Passwd {
        #[arg(value_name = "NAME[:PASSWORD]")]
        name: String,
    },
    /// Give USER the permissions of ROLE (`root` makes USER an administrator).
    GrantRole { user: String, role: String },
    /// Take ROLE from USER.
    RevokeRole { user: String, role: String },
}

#[derive(Debug, PartialEq, Eq, Subcommand)]
pub enum RoleCommand {
    /// Add a role without permissions.
    Add { name: String },
    /// Delete a role; users holding it lose it.
    Delete { name: String },
    /// Every role and its permissions.
    List,
    /// Let ROLE read, write or both: KEY alone, [KEY, END), every key with prefix KEY
    /// (--prefix), or every key from KEY on (--from-key).
    GrantPermission {
        role: String,
        #[arg(value_enum)]
        kind: PermissionKindArg,
        #[command(flatten)]
        keys: PermissionKeys,
    },
    /// Remove ROLE's permission on exactly these keys, whatever its kind.
    RevokePermission {
        role: String,
        #[command(flatten)]
        keys: PermissionKeys,
    },
}

/// The keys of a permission, as etcdctl writes them.
#[derive(Debug, PartialEq, Eq, Args)]
pub struct PermissionKeys {
    #[arg(value_name = "KEY")]
    pub key: String,
    /// End of the range (exclusive).
    #[arg(value_name = "END", conflicts_with_all = ["prefix", "from_key"])]
    pub end: Option<String>,
    /// Every key beginning with KEY.
    #[arg(long, conflicts_with = "from_key")]
    pub prefix: bool,
    /// Every key from KEY to the end of the key space.
    #[arg(long)]
    pub from_key: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PermissionKindArg {
    Read,
    Write,
    Readwrite,
}

#[derive(Debug, PartialEq, Eq, Subcommand)]
pub enum AuthCommand {
    /// Turn auth on: needs a user `root` holding the role `root`.
    Enable,
    /// Turn auth off: every client may do everything again.
    Disable,
    /// Whether auth is on, and the auth revision.
    Status,
}

impl Command {
    /// The command as typed, without its arguments (`cluster status`): the name of its span.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Put { .. } => "put",
            Command::Get { .. } => "get",
            Command::Del { .. } => "del",
            Command::Scan(_) => "scan",
            Command::Txn(TxnArgs { shortcut: None, .. }) => "txn",
            Command::Txn(TxnArgs {
                shortcut: Some(TxnCommand::Cas { .. }),
                ..
            }) => "txn cas",
            Command::Txn(TxnArgs {
                shortcut: Some(TxnCommand::PutIfAbsent { .. }),
                ..
            }) => "txn put-if-absent",
            Command::Cluster(ClusterCommand::Status) => "cluster status",
            Command::Cluster(ClusterCommand::Members) => "cluster members",
            Command::Cluster(ClusterCommand::Shards) => "cluster shards",
            Command::Join { .. } => "join",
            Command::Leave { .. } => "leave",
            Command::Compact { .. } => "compact",
            Command::Unsafe(UnsafeCommand::RecoverShard { .. }) => "unsafe recover-shard",
            Command::Dev(DevCommand::Certs { .. }) => "dev certs",
            Command::User(UserCommand::Add { .. }) => "user add",
            Command::User(UserCommand::Delete { .. }) => "user delete",
            Command::User(UserCommand::List) => "user list",
            Command::User(UserCommand::Passwd { .. }) => "user passwd",
            Command::User(UserCommand::GrantRole { .. }) => "user grant-role",
            Command::User(UserCommand::RevokeRole { .. }) => "user revoke-role",
            Command::Role(RoleCommand::Add { .. }) => "role add",
            Command::Role(RoleCommand::Delete { .. }) => "role delete",
            Command::Role(RoleCommand::List) => "role list",
            Command::Role(RoleCommand::GrantPermission { .. }) => "role grant-permission",
            Command::Role(RoleCommand::RevokePermission { .. }) => "role revoke-permission",
            Command::Auth(AuthCommand::Enable) => "auth enable",
            Command::Auth(AuthCommand::Disable) => "auth disable",
            Command::Auth(AuthCommand::Status) => "auth status",
        }
    }
}

#[derive(Debug, PartialEq, Eq, Subcommand)]
pub enum DevCommand {
    /// Write a throw-away CA and a certificate per role (node, coordinator, gateway) plus a
    /// client certificate into --out, for a local TLS cluster. The CA key is written too:
    /// never use these in production.
    Certs {
        /// Folder to write the PEM files into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Host names and IP addresses the certificates are valid for.
        #[arg(long, value_delimiter = ',', default_value = "127.0.0.1,localhost")]
        hosts: Vec<String>,
    },
}

#[derive(Debug, PartialEq, Eq, Subcommand)]
pub enum UnsafeCommand {
    /// Recover SHARD, which lost its quorum, from its surviving replica on --from-node: that
    /// replica becomes the only voter and the shard is re-replicated from it. Writes the lost
    /// replicas acknowledged after the survivor's last log entry are LOST; the output says
    /// where the survivor was. Only for a shard that `cluster status` lists without quorum.
    RecoverShard {
        shard: u64,
        /// The node whose replica survives (one of the surviving voters `cluster status` lists).
        #[arg(long, value_name = "NODE_ID")]
        from_node: u64,
        /// Required: you accept that acknowledged writes may be lost.
        #[arg(long = "yes-i-may-lose-acknowledged-writes", required = true)]
        confirmed: bool,
    },
}

#[derive(Debug, PartialEq, Eq, Args)]
pub struct ScanArgs {
    /// Every key beginning with P.
    #[arg(long, value_name = "P", conflicts_with_all = ["start", "end"])]
    pub prefix: Option<String>,
    /// First key of the range (inclusive).
    #[arg(long, value_name = "S")]
    pub start: Option<String>,
    /// End of the range (exclusive); default: the end of the key space.
    #[arg(long, value_name = "E", requires = "start")]
    pub end: Option<String>,
    /// Most rows to print.
    #[arg(long, value_name = "N", default_value_t = SCAN_ROWS_DEFAULT,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: u64,
    /// Print keys and metadata without values.
    #[arg(long, conflicts_with = "count")]
    pub keys_only: bool,
    /// Print only the number of keys in range.
    #[arg(long)]
    pub count: bool,
    /// Read from any replica: faster, possibly stale.
    #[arg(long)]
    pub serializable: bool,
    /// Read every key as it was at revision N (0 = a new snapshot); every page is read at
    /// the same revision either way.
    #[arg(long = "rev", value_name = "N", default_value_t = 0)]
    pub revision: u64,
}

#[derive(Debug, PartialEq, Eq, Subcommand)]
pub enum ClusterCommand {
    /// Cluster id, shard and node counts, replication health.
    Status,
    /// Every node with its state, load and labels.
    Members,
    /// Every shard with its epoch, leader, voters and learners.
    Shards,
}

/// Parses `500ms`, `5s`, `2m`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 500ms, 5s or 1m"))?;
    let duration = match unit {
        "ms" => Duration::from_millis(number),
        "" | "s" => Duration::from_secs(number),
        "m" => Duration::from_secs(number.saturating_mul(60)),
        _ => return Err(format!("unknown unit {unit:?} in {text:?}: use ms, s or m")),
    };
    if duration.is_zero() {
        return Err("must be greater than zero".to_string());
    }
    Ok(duration)
}

/// Parses a `key=value` label.
pub fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("{text:?} is not a label: use KEY=VALUE")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(
            ["cairnctl", "--endpoints", "g1:7000,g2:7000"]
                .iter()
                .chain(args),
        )
    }

    /// A command's span is named as the command is typed.
    #[test]
    fn command_names_are_the_words_typed() {
        for (words, rest) in [
            ("put", &["k", "v"][..]),
            ("get", &["k"]),
            ("del", &["k"]),
            ("scan", &["--prefix", "p"]),
            ("txn cas", &["k", "--value", "v", "--expect-version", "1"]),
            ("txn put-if-absent", &["k", "v"]),
            ("txn", &["--then", "put a 1"]),
            ("cluster status", &[]),
            ("cluster members", &[]),
            ("cluster shards", &[]),
            ("join", &["10.0.0.1:7101"]),
            ("leave", &["3"]),
            ("compact", &["7"]),
            (
                "unsafe recover-shard",
                &[
                    "1",
                    "--from-node",
                    "2",
                    "--yes-i-may-lose-acknowledged-writes",
                ],
            ),
            ("dev certs", &["--out", "/tmp/certs"]),
        ] {
            let args: Vec<&str> = words.split(' ').chain(rest.iter().copied()).collect();
            let command = parse(&args).unwrap().command;
            assert_eq!(command.name(), words, "{args:?}");
        }
    }

    #[test]
    fn global_flags_parse_anywhere() {
        let cli = parse(&["get", "k", "-o", "json", "--timeout", "250ms"]).unwrap();
        assert_eq!(cli.endpoints, ["g1:7000", "g2:7000"]);
        assert_eq!(cli.output, OutputFormat::Json);
        assert_eq!(cli.timeout, Duration::from_millis(250));
        assert_eq!(
            cli.command,
            Command::Get {
                key: "k".into(),
                serializable: false,
                keys_only: false,
                revision: 0,
            }
        );
        let at = parse(&["get", "k", "--rev", "42"]).unwrap();
        assert!(matches!(at.command, Command::Get { revision: 42, .. }));
        let compact = parse(&["compact", "7"]).unwrap();
        assert_eq!(compact.command, Command::Compact { revision: 7 });
    }

    #[test]
    fn auth_commands_parse() {
        let cli = parse(&[
            "--user",
            "root:pw",
            "role",
            "grant-permission",
            "r",
            "read",
            "a/",
            "--prefix",
        ])
        .unwrap();
        assert_eq!(cli.user.as_deref(), Some("root:pw"));
        assert_eq!(
            cli.command,
            Command::Role(RoleCommand::GrantPermission {
                role: "r".into(),
                kind: PermissionKindArg::Read,
                keys: PermissionKeys {
                    key: "a/".into(),
                    end: None,
                    prefix: true,
                    from_key: false,
                },
            })
        );
        assert!(parse(&[
            "role",
            "grant-permission",
            "r",
            "read",
            "a",
            "b",
            "--prefix"
        ])
        .is_err());
        assert!(matches!(
            parse(&["user", "add", "alice", "--no-password"])
                .unwrap()
                .command,
            Command::User(UserCommand::Add {
                no_password: true,
                ..
            })
        ));
        let grant = parse(&["user", "grant-role", "root", "root"]).unwrap();
        assert_eq!(grant.user, None, "a positional USER is not --user");
        assert!(matches!(
            parse(&["auth", "enable"]).unwrap().command,
            Command::Auth(AuthCommand::Enable)
        ));
    }

    #[test]
    fn defaults() {
        let cli = parse(&["put", "k", "v"]).unwrap();
        assert_eq!(cli.output, OutputFormat::Table);
        assert_eq!(cli.timeout, Duration::from_secs(5));
        if std::env::var_os("CAIRN_ENDPOINTS").is_none() {
            let cli = Cli::try_parse_from(["cairnctl", "cluster", "status"]).unwrap();
            assert_eq!(cli.endpoints, ["127.0.0.1:7000"]);
        }
    }

    #[test]
    fn scan_flags() {
        let cli = parse(&["scan", "--prefix", "user/", "--limit", "10", "--keys-only"]).unwrap();
        let Command::Scan(scan) = cli.command else {
            panic!("not a scan")
        };
        assert_eq!(scan.prefix.as_deref(), Some("user/"));
        assert_eq!(scan.limit, 10);
        assert!(scan.keys_only && !scan.count);
        let Command::Scan(scan) = parse(&["scan"]).unwrap().command else {
            panic!("not a scan")
        };
        assert_eq!(scan.limit, SCAN_ROWS_DEFAULT);
    }

    #[test]
    fn scan_rejects_conflicting_selections() {
        assert!(parse(&["scan", "--prefix", "a", "--start", "b"]).is_err());
        assert!(
            parse(&["scan", "--end", "b"]).is_err(),
            "--end needs --start"
        );
        assert!(parse(&["scan", "--limit", "0"]).is_err());
        assert!(parse(&["scan", "--count", "--keys-only"]).is_err());
        assert!(parse(&["scan", "--start", "a", "--end", "b"]).is_ok());
    }

    #[test]
    fn join_labels() {
        let cli = parse(&["join", "n4:7100", "--label", "zone=a", "--label", "rack=r1"]).unwrap();
        assert_eq!(
            cli.command,
            Command::Join {
                address: "n4:7100".into(),
                labels: vec![("zone".into(), "a".into()), ("rack".into(), "r1".into())]
            }
        );
        assert!(parse(&["join", "n4:7100", "--label", "zone"]).is_err());
        assert!(parse(&["leave", "not-a-number"]).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("750ms"), Ok(Duration::from_millis(750)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("s").is_err());
    }
}
