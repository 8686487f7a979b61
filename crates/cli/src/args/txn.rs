//! `cairnctl txn`'s arguments: a transaction from `--if`/`--then`/`--else`, a file or stdin
//! (parsed by `crate::txn_script`), or the `cas` and `put-if-absent` shortcuts.

use clap::{Args, Subcommand};
use std::path::PathBuf;

pub(super) const TXN_HELP: &str = "\
INPUT:
  From --if/--then/--else (each repeatable, one comparison or request per value), else from
  --file (- for stdin), else from stdin (with prompts when stdin is a terminal, or with -i):
  etcdctl's txn format, comparisons, a blank line, success requests, a blank line, failure
  requests:

    mod(\"account/1\") > \"0\"
    value(\"lock\") = \"free\"

    put account/1 90
    put account/2 110

    get account/1

  Comparisons: create|mod|value|version(\"KEY\") =|!=|>|< \"VALUE\" (c, m, val, ver for
  short; a number for all but value). Requests: put KEY VALUE [--prev-kv]; get KEY
  [RANGE_END] [--prefix] [--from-key] [--limit N] [--rev N] [--keys-only] [--count-only]
  [--serializable]; del KEY [--prev-kv]. Quote words with spaces (\"a b\", Go escapes
  such as \\xff, or 'a b').

OUTPUT:
  SUCCESS or FAILURE, then each response after a blank line, as etcdctl prints them;
  --output json prints {\"succeeded\", \"revision\", \"responses\"}. A transaction that
  lost a race with another write is run again a few times (the SDK's conflict policy).
  Exit code 4 when the comparisons did not hold (FAILURE; the failure requests ran).";

// `cairnctl txn`: a transaction from the arguments, a file or stdin, or a shortcut. (A plain
// comment: the variant's doc comment is the command's help.)
#[derive(Debug, PartialEq, Eq, Args)]
pub struct TxnArgs {
    #[command(subcommand)]
    pub shortcut: Option<TxnCommand>,
    /// A comparison, e.g. 'mod("k") > "0"' (repeatable: all must hold).
    #[arg(long = "if", value_name = "COMPARISON", conflicts_with = "file")]
    pub compares: Vec<String>,
    /// A request run when every comparison holds, e.g. 'put k v' (repeatable, in order).
    #[arg(long = "then", value_name = "REQUEST", conflicts_with = "file")]
    pub success: Vec<String>,
    /// A request run when a comparison does not hold, e.g. 'get k' (repeatable, in order).
    #[arg(long = "else", value_name = "REQUEST", conflicts_with = "file")]
    pub failure: Vec<String>,
    /// Read the transaction in etcdctl's txn format from FILE (- for stdin).
    #[arg(long, short = 'f', value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Prompt for each part on stderr, as `etcdctl txn -i` does (reads stdin).
    #[arg(long, short = 'i', conflicts_with_all = ["file", "compares", "success", "failure"])]
    pub interactive: bool,
}

impl TxnArgs {
    /// True when the transaction is given by --if, --then or --else.
    pub fn has_arguments(&self) -> bool {
        !(self.compares.is_empty() && self.success.is_empty() && self.failure.is_empty())
    }
}

#[derive(Debug, PartialEq, Eq, Subcommand)]
pub enum TxnCommand {
    /// Compare-and-set: write --value only if KEY matches the expectation (exit code 4 if not).
    Cas {
        key: String,
        /// The value to write.
        #[arg(long)]
        value: String,
        #[command(flatten)]
        expect: Expect,
    },
    /// Write VALUE only if KEY does not exist (exit code 4 if it does).
    PutIfAbsent { key: String, value: String },
}

/// Exactly one expectation of a compare-and-set.
#[derive(Debug, PartialEq, Eq, Args)]
#[group(required = true, multiple = false)]
pub struct Expect {
    /// The current value must be V.
    #[arg(long, value_name = "V")]
    pub expect_value: Option<String>,
    /// The current version must be N (0 = the key is absent).
    #[arg(long, value_name = "N")]
    pub expect_version: Option<u64>,
    /// The current mod_revision must be N (0 = the key is absent).
    #[arg(long, value_name = "N")]
    pub expect_mod_revision: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Cli, Command};
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(["cairnctl"].iter().chain(args))
    }

    #[test]
    fn cas_needs_exactly_one_expectation() {
        let cli = parse(&["txn", "cas", "k", "--value", "new", "--expect-version", "3"]).unwrap();
        assert_eq!(
            cli.command,
            Command::Txn(TxnArgs {
                shortcut: Some(TxnCommand::Cas {
                    key: "k".into(),
                    value: "new".into(),
                    expect: Expect {
                        expect_value: None,
                        expect_version: Some(3),
                        expect_mod_revision: None
                    }
                }),
                compares: vec![],
                success: vec![],
                failure: vec![],
                file: None,
                interactive: false,
            })
        );
        assert!(parse(&["txn", "cas", "k", "--value", "new"]).is_err());
        assert!(parse(&[
            "txn",
            "cas",
            "k",
            "--value",
            "n",
            "--expect-value",
            "a",
            "--expect-version",
            "1"
        ])
        .is_err());
        assert!(parse(&["txn", "put-if-absent", "k", "v"]).is_ok());
    }

    #[test]
    fn txn_takes_arguments_a_file_or_stdin() {
        let Command::Txn(txn) = parse(&[
            "txn",
            "--if",
            r#"mod("a") > "0""#,
            "--then",
            "put a 1",
            "--then",
            "put b 2",
            "--else",
            "get a",
        ])
        .unwrap()
        .command
        else {
            panic!("not a txn")
        };
        assert_eq!(txn.shortcut, None);
        assert_eq!(txn.compares, [r#"mod("a") > "0""#]);
        assert_eq!(txn.success, ["put a 1", "put b 2"]);
        assert_eq!(txn.failure, ["get a"]);
        assert!(txn.has_arguments());

        let Command::Txn(txn) = parse(&["txn", "--file", "-"]).unwrap().command else {
            panic!("not a txn")
        };
        assert_eq!(txn.file.as_deref(), Some(std::path::Path::new("-")));
        assert!(!txn.has_arguments());
        let Command::Txn(txn) = parse(&["txn", "-i"]).unwrap().command else {
            panic!("not a txn")
        };
        assert!(txn.interactive);
        let bare = parse(&["txn"]).unwrap().command;
        assert_eq!(bare.name(), "txn");

        assert!(parse(&["txn", "--file", "f", "--then", "put a 1"]).is_err());
        assert!(parse(&["txn", "-i", "--then", "put a 1"]).is_err());
        assert!(
            parse(&["txn", "--then", "put a 1", "put-if-absent", "k", "v"]).is_err(),
            "a shortcut takes no transaction arguments"
        );
    }
}
