//! `cairnctl txn`'s input: a transaction in etcdctl's `txn` format, parsed into the SDK's
//! [`Txn`]. Parsing only: nothing here talks to a cluster.
//!
//! ```text
//! mod("account/1") > "0"          comparisons, one per line, all must hold
//! value("lock") = "free"
//!                                  a blank line
//! put account/1 90                 success requests: put, get, del
//! put account/2 "110"
//!                                  a blank line
//! get account/1                    failure requests
//! ```
//!
//! A comparison is `TARGET("KEY") OP "VALUE"`: TARGET is `create` (`c`), `mod` (`m`), `value`
//! (`val`) or `version` (`ver`); OP is `=`, `!=`, `>` or `<`; the value is a number for every
//! target but `value`. Requests are `put KEY VALUE [--prev-kv]`, `get KEY [RANGE_END]
//! [--prefix] [--from-key] [--limit N] [--rev N] [--keys-only] [--count-only]
//! [--serializable]` and `del KEY [--prev-kv]`. Words may be double-quoted with Go's escapes
//! (`"a b\n"`, `"\xff"`) or single-quoted (taken as they are), as etcdctl reads them. Lines
//! starting with `#` are comments (an extension: etcdctl has none).
//!
//! Every error names its line (or its argument) and what is wrong; nothing here panics on
//! input.

use cairn_client::{Compare, CompareOp, Consistency, GetOptions, Op, RangeOptions, Txn};
use std::fmt;
use std::io::BufRead;
pub use words::split_words;
use words::Cursor;

#[cfg(test)]
mod tests;
mod words;

/// Longest script read (file or stdin), a bound far above any transaction a cluster accepts
/// (`txn_ops_max` ops of at most `request_bytes_max` in all).
pub const SCRIPT_BYTES_MAX: usize = 64 << 20;

/// The prompts of `cairnctl txn -i`, etcdctl's words.
pub const PROMPT_COMPARES: &str = "compares:";
pub const PROMPT_SUCCESS: &str = "success requests (get, put, del):";
pub const PROMPT_FAILURE: &str = "failure requests (get, put, del):";

/// A parsed transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnScript {
    pub compares: Vec<Compare>,
    pub success: Vec<Op>,
    pub failure: Vec<Op>,
}

impl TxnScript {
    pub fn into_txn(self) -> Txn {
        Txn::new()
            .when(self.compares)
            .then(self.success)
            .otherwise(self.failure)
    }
}

/// Where a parse error is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A line of a file or of stdin, counted from 1.
    Line(usize),
    /// The `index`-th (from 1) value of a command-line flag.
    Argument { flag: &'static str, index: usize },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub location: Location,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Location::Line(line) => write!(f, "line {line}: {}", self.message),
            Location::Argument { flag, index } => {
                write!(f, "--{flag} #{index}: {}", self.message)
            }
        }
    }
}

impl std::error::Error for ParseError {}

/// The three parts of a script, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Compares,
    Success,
    Failure,
    /// After the blank line that ends the failure requests.
    Done,
}

/// Parses a whole script (a file's text): after the failure requests, only blank lines and
/// comments may follow.
pub fn parse(text: &str) -> Result<TxnScript, ParseError> {
    read(text.as_bytes(), &mut |_| {}, true)
}

/// Reads a script line by line from `input`, calling `prompt` with etcdctl's prompt before
/// each part (`cairnctl txn -i`). Stops at the blank line that ends the failure requests, or
/// at the end of the input; with `to_end`, reads on and refuses anything but blank lines.
pub fn read(
    input: impl BufRead,
    prompt: &mut dyn FnMut(&str),
    to_end: bool,
) -> Result<TxnScript, ParseError> {
    let mut script = TxnScript::default();
    let mut part = Part::Compares;
    let mut bytes_read = 0usize;
    prompt(PROMPT_COMPARES);
    for (index, line) in input.lines().enumerate() {
        let number = index + 1;
        let at = |message: String| ParseError {
            location: Location::Line(number),
            message,
        };
        let line = line.map_err(|error| at(format!("cannot read the input: {error}")))?;
        bytes_read = bytes_read.saturating_add(line.len() + 1);
        if bytes_read > SCRIPT_BYTES_MAX {
            return Err(at(format!(
                "the transaction is longer than {SCRIPT_BYTES_MAX} bytes"
            )));
        }
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        if line.is_empty() {
            part = match part {
                Part::Compares => {
                    prompt(PROMPT_SUCCESS);
                    Part::Success
                }
                Part::Success => {
                    prompt(PROMPT_FAILURE);
                    Part::Failure
                }
                Part::Failure | Part::Done => Part::Done,
            };
            if part == Part::Done && !to_end {
                break;
            }
            continue;
        }
        match part {
            Part::Compares => script.compares.push(parse_compare(line).map_err(|message| {
                let request = ["put ", "get ", "del ", "delete "]
                    .iter()
                    .any(|command| line.starts_with(command));
                if request {
                    at(format!(
                        "{message} (a blank line ends the comparisons, before the requests)"
                    ))
                } else {
                    at(message)
                }
            })?),
            Part::Success => script.success.push(parse_request(line).map_err(at)?),
            Part::Failure => script.failure.push(parse_request(line).map_err(at)?),
            Part::Done => {
                return Err(at(format!(
                    "unexpected {line:?} after the failure requests: a transaction is \
                     comparisons, a blank line, success requests, a blank line, failure \
                     requests"
                )))
            }
        }
    }
    Ok(script)
}

/// Parses the command-line form: each `--if`, `--then` and `--else` value is one line of the
/// corresponding part.
pub fn from_arguments(
    compares: &[String],
    success: &[String],
    failure: &[String],
) -> Result<TxnScript, ParseError> {
    fn each<T>(
        flag: &'static str,
        values: &[String],
        parse: fn(&str) -> Result<T, String>,
    ) -> Result<Vec<T>, ParseError> {
        values
            .iter()
            .enumerate()
            .map(|(index, value)| {
                parse(value.trim()).map_err(|message| ParseError {
                    location: Location::Argument {
                        flag,
                        index: index + 1,
                    },
                    message,
                })
            })
            .collect()
    }
    Ok(TxnScript {
        compares: each("if", compares, parse_compare)?,
        success: each("then", success, parse_request)?,
        failure: each("else", failure, parse_request)?,
    })
}

/// Parses one comparison: `TARGET("KEY") OP "VALUE"`.
pub fn parse_compare(line: &str) -> Result<Compare, String> {
    const SHAPE: &str = "a comparison looks like mod(\"key\") > \"0\"";
    let Some((target, rest)) = line.split_once('(') else {
        return Err(format!("{SHAPE}; found no '(' in {line:?}"));
    };
    let target = target.trim();
    let mut cursor = Cursor::new(rest);
    cursor.skip_spaces();
    let key = cursor.word_until(')')?;
    cursor.skip_spaces();
    if !cursor.eat(")") {
        return Err(format!("{SHAPE}; the key is not followed by ')'"));
    }
    cursor.skip_spaces();
    if cursor.rest().starts_with(">=") || cursor.rest().starts_with("<=") {
        return Err("there is no >= or <=: the operators are =, !=, > and <".into());
    }
    let op = if cursor.eat("!=") {
        CompareOp::NotEqual
    } else if cursor.eat("==") || cursor.eat("=") {
        CompareOp::Equal
    } else if cursor.eat(">") {
        CompareOp::Greater
    } else if cursor.eat("<") {
        CompareOp::Less
    } else {
        return Err(format!(
            "expected an operator (=, !=, > or <) after {target}(...), found {:?}",
            cursor.rest()
        ));
    };
    cursor.skip_spaces();
    if cursor.is_done() {
        return Err(format!("{SHAPE}; the value to compare with is missing"));
    }
    let value = cursor.word_until(' ')?;
    cursor.skip_spaces();
    if !cursor.is_done() {
        return Err(format!(
            "unexpected {:?} after the value: quote a value that holds spaces",
            cursor.rest()
        ));
    }
    let number = |name: &str| -> Result<u64, String> {
        std::str::from_utf8(&value)
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| {
                format!(
                    "{name} compares with a number, not {:?}",
                    String::from_utf8_lossy(&value)
                )
            })
    };
    Ok(match target {
        "c" | "create" => Compare::create_revision(key, op, number("create")?),
        "m" | "mod" => Compare::mod_revision(key, op, number("mod")?),
        "ver" | "version" => Compare::version(key, op, number("version")?),
        "val" | "value" => Compare::value(key, op, value),
        "lease" => return Err("lease comparisons are not supported: Cairn has no leases".into()),
        other => {
            return Err(format!(
                "unknown comparison target {other:?}: use create, mod, value or version (or c, \
                 m, val, ver)"
            ))
        }
    })
}

/// Parses one request: `put`, `get` or `del` with etcdctl's arguments.
pub fn parse_request(line: &str) -> Result<Op, String> {
    let words = split_words(line)?;
    let Some((command, rest)) = words.split_first() else {
        return Err("empty request".into());
    };
    let arguments = Arguments::split(rest)?;
    match command.as_slice() {
        b"put" => put(arguments),
        b"get" => get(arguments),
        b"del" | b"delete" => delete(arguments),
        other => Err(format!(
            "unknown request {:?}: use put, get or del",
            String::from_utf8_lossy(other)
        )),
    }
}

fn put(mut arguments: Arguments) -> Result<Op, String> {
    const USAGE: &str = "put KEY VALUE [--prev-kv]";
    let prev_kv = arguments.switch("prev-kv");
    arguments.refuse_unsupported(
        &["lease", "ignore-value", "ignore-lease"],
        "Cairn has no leases",
    )?;
    arguments.refuse_unknown(USAGE)?;
    let [key, value] = arguments.positionals::<2>(USAGE)?;
    Ok(Op::Put {
        key: non_empty(key)?,
        value,
        prev_kv,
    })
}

fn delete(mut arguments: Arguments) -> Result<Op, String> {
    const USAGE: &str = "del KEY [--prev-kv]";
    let prev_kv = arguments.switch("prev-kv");
    if arguments.switch("prefix") || arguments.switch("from-key") || arguments.positional.len() > 1
    {
        return Err(
            "del takes one key: Cairn deletes one key per request; list each key on its own \
             line"
                .into(),
        );
    }
    arguments.refuse_unknown(USAGE)?;
    let [key] = arguments.positionals::<1>(USAGE)?;
    Ok(Op::Delete {
        key: non_empty(key)?,
        prev_kv,
    })
}

fn get(mut arguments: Arguments) -> Result<Op, String> {
    const USAGE: &str = "get KEY [RANGE_END] [--prefix] [--from-key] [--limit N] [--rev N] \
                         [--keys-only] [--count-only] [--serializable]";
    let prefix = arguments.switch("prefix");
    let from_key = arguments.switch("from-key");
    let keys_only = arguments.switch("keys-only");
    let count_only = arguments.switch("count-only");
    let mut serializable = arguments.switch("serializable");
    let limit = arguments.number("limit")?;
    let revision = arguments.number("rev")?.unwrap_or(0);
    match arguments.valued("consistency")?.as_deref() {
        None => {}
        Some(b"l") => serializable = false,
        Some(b"s") => serializable = true,
        Some(other) => {
            return Err(format!(
                "--consistency is l (linearizable) or s (serializable), not {:?}",
                String::from_utf8_lossy(other)
            ))
        }
    }
    arguments.refuse_unsupported(
        &[
            "sort-by",
            "order",
            "print-value-only",
            "min-mod-revision",
            "max-mod-revision",
            "min-create-revision",
            "max-create-revision",
        ],
        "not supported inside a Cairn transaction",
    )?;
    arguments.refuse_unknown(USAGE)?;
    let consistency = if serializable {
        Consistency::Serializable
    } else {
        Consistency::Linearizable
    };
    let (key, end) = match arguments.positional.len() {
        1 => (arguments.positional.remove(0), None),
        2 => {
            let end = arguments.positional.remove(1);
            (arguments.positional.remove(0), Some(end))
        }
        _ => return Err(format!("get needs KEY and at most a RANGE_END: {USAGE}")),
    };
    if [prefix, from_key, end.is_some()]
        .iter()
        .filter(|set| **set)
        .count()
        > 1
    {
        return Err("use one of RANGE_END, --prefix and --from-key".into());
    }
    let single = !prefix && !from_key && end.is_none();
    if single && limit.is_none() && !count_only {
        return Ok(Op::Get {
            key: non_empty(key)?,
            options: GetOptions {
                consistency,
                keys_only,
                revision,
            },
        });
    }
    let mut options = if prefix {
        // An empty prefix is every key, as in etcdctl.
        RangeOptions::for_prefix(key.clone())
    } else if from_key {
        RangeOptions::for_range(key.clone(), Vec::new())
    } else if let Some(end) = end {
        RangeOptions::for_range(key.clone(), end)
    } else {
        // One key, read as a range for --limit or --count-only: [key, key + 0x00).
        let key = non_empty(key.clone())?;
        let mut end = key.clone();
        end.push(0);
        RangeOptions::for_range(key, end)
    };
    if prefix && key.is_empty() {
        options = RangeOptions::for_range(Vec::new(), Vec::new());
    }
    options.limit = limit.unwrap_or(0);
    options.keys_only = keys_only;
    options.count_only = count_only;
    options.consistency = consistency;
    options.revision = revision;
    Ok(Op::Range(options))
}

fn non_empty(key: Vec<u8>) -> Result<Vec<u8>, String> {
    if key.is_empty() {
        Err("the key is empty".into())
    } else {
        Ok(key)
    }
}

/// A request's words after the command: `--flag`, `--flag=value`, `--flag value` (for the
/// flags that take one) and positionals; `--` ends the flags.
struct Arguments {
    flags: Vec<(String, Option<Vec<u8>>)>,
    positional: Vec<Vec<u8>>,
}

/// The flags that take a value.
const VALUED_FLAGS: [&str; 4] = ["limit", "rev", "consistency", "lease"];

impl Arguments {
    fn split(words: &[Vec<u8>]) -> Result<Self, String> {
        let mut arguments = Arguments {
            flags: Vec::new(),
            positional: Vec::new(),
        };
        let mut words = words.iter();
        while let Some(word) = words.next() {
            if word == b"--" {
                arguments.positional.extend(words.cloned());
                break;
            }
            let Some(flag) = word.strip_prefix(b"--") else {
                arguments.positional.push(word.clone());
                continue;
            };
            let flag = String::from_utf8_lossy(flag).into_owned();
            match flag.split_once('=') {
                Some((name, value)) => arguments
                    .flags
                    .push((name.to_string(), Some(value.as_bytes().to_vec()))),
                None if VALUED_FLAGS.contains(&flag.as_str()) => {
                    let value = words
                        .next()
                        .ok_or_else(|| format!("--{flag} needs a value"))?;
                    arguments.flags.push((flag, Some(value.clone())));
                }
                None => arguments.flags.push((flag, None)),
            }
        }
        Ok(arguments)
    }

    /// Takes a flag without a value.
    fn switch(&mut self, name: &str) -> bool {
        let before = self.flags.len();
        self.flags.retain(|(flag, _)| flag != name);
        self.flags.len() != before
    }

    /// Takes a flag's value (the last one given).
    fn valued(&mut self, name: &str) -> Result<Option<Vec<u8>>, String> {
        let mut found = None;
        let mut error = None;
        self.flags.retain(|(flag, value)| {
            if flag != name {
                return true;
            }
            match value {
                Some(value) => found = Some(value.clone()),
                None => error = Some(format!("--{name} needs a value")),
            }
            false
        });
        match error {
            Some(error) => Err(error),
            None => Ok(found),
        }
    }

    fn number(&mut self, name: &str) -> Result<Option<u64>, String> {
        self.valued(name)?
            .map(|value| {
                std::str::from_utf8(&value)
                    .ok()
                    .and_then(|text| text.parse().ok())
                    .ok_or_else(|| {
                        format!(
                            "--{name} takes a number, not {:?}",
                            String::from_utf8_lossy(&value)
                        )
                    })
            })
            .transpose()
    }

    fn refuse_unsupported(&self, names: &[&str], why: &str) -> Result<(), String> {
        match self
            .flags
            .iter()
            .find(|(flag, _)| names.contains(&flag.as_str()))
        {
            Some((flag, _)) => Err(format!("--{flag} is not supported: {why}")),
            None => Ok(()),
        }
    }

    fn refuse_unknown(&self, usage: &str) -> Result<(), String> {
        match self.flags.first() {
            Some((flag, _)) => Err(format!("unknown flag --{flag}: {usage}")),
            None => Ok(()),
        }
    }

    fn positionals<const N: usize>(self, usage: &str) -> Result<[Vec<u8>; N], String> {
        let count = self.positional.len();
        self.positional.try_into().map_err(|_| {
            format!("expected {N} argument(s), found {count}: {usage} (quote words with spaces)")
        })
    }
}
