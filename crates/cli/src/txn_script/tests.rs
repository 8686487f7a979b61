//! Table-driven tests of the `cairnctl txn` parser.

use super::*;

fn range(options: RangeOptions) -> Op {
    Op::Range(options)
}

#[test]
fn comparisons() {
    let cases: Vec<(&str, Compare)> = vec![
        (
            r#"mod("key") > "0""#,
            Compare::mod_revision("key", CompareOp::Greater, 0),
        ),
        (
            r#"m("key")>"0""#,
            Compare::mod_revision("key", CompareOp::Greater, 0),
        ),
        (
            r#"value("k") = "v""#,
            Compare::value("k", CompareOp::Equal, "v"),
        ),
        (
            r#"val("k") != "a b""#,
            Compare::value("k", CompareOp::NotEqual, "a b"),
        ),
        (
            r#"version("k") = "3""#,
            Compare::version("k", CompareOp::Equal, 3),
        ),
        (
            r#"ver("k") < 10"#,
            Compare::version("k", CompareOp::Less, 10),
        ),
        (
            r#"create("k") = "0""#,
            Compare::create_revision("k", CompareOp::Equal, 0),
        ),
        (
            r#"c( "k" ) == "5""#,
            Compare::create_revision("k", CompareOp::Equal, 5),
        ),
        (
            r#"value(bare/key) = plain"#,
            Compare::value("bare/key", CompareOp::Equal, "plain"),
        ),
        (
            r#"value("k\x00\xff") = "\n\t\"""#,
            Compare::value(b"k\x00\xff".to_vec(), CompareOp::Equal, "\n\t\""),
        ),
        (
            r#"value('raw\n') = ''"#,
            Compare::value(br"raw\n".to_vec(), CompareOp::Equal, ""),
        ),
        (
            r#"value("é") = "\u00e9\101""#,
            Compare::value("é", CompareOp::Equal, "éA"),
        ),
    ];
    for (line, expected) in cases {
        assert_eq!(parse_compare(line), Ok(expected), "{line}");
    }
}

#[test]
fn bad_comparisons_say_what_is_wrong() {
    let cases = [
        ("mod key > 0", "no '('"),
        (r#"mod("key" > "0""#, "not followed by ')'"),
        (r#"mod("key") >= "0""#, "there is no >= or <="),
        (r#"mod("key") ~ "0""#, "expected an operator"),
        (r#"mod("key") >"#, "value to compare with is missing"),
        (
            r#"mod("key") > "x""#,
            "mod compares with a number, not \"x\"",
        ),
        (r#"version("key") = "-1""#, "version compares with a number"),
        (r#"lease("key") = "1""#, "Cairn has no leases"),
        (r#"size("key") = "1""#, "unknown comparison target \"size\""),
        (r#"value("key) = "1""#, "not followed by ')'"),
        (r#"value("key") = "1"#, "unterminated quote"),
        (r#"value("k") = a b"#, "unexpected \"b\" after the value"),
        (r#"value("\q") = "1""#, "unknown escape \\q"),
        (r#"value("\x4") = "1""#, "short \\x escape"),
        (r#"value("\400") = "1""#, "above 377"),
    ];
    for (line, needle) in cases {
        let error = parse_compare(line).expect_err(line);
        assert!(error.contains(needle), "{line}: {error}");
    }
}

#[test]
fn requests() {
    let cases: Vec<(&str, Op)> = vec![
        ("put k v", Op::put("k", "v")),
        (
            r#"put "a key" "a value" --prev-kv"#,
            Op::Put {
                key: b"a key".to_vec(),
                value: b"a value".to_vec(),
                prev_kv: true,
            },
        ),
        ("put k -- --dashes", Op::put("k", "--dashes")),
        ("get k", Op::get("k")),
        (
            "get k --rev=7 --keys-only --serializable",
            Op::Get {
                key: b"k".to_vec(),
                options: GetOptions {
                    consistency: Consistency::Serializable,
                    keys_only: true,
                    revision: 7,
                },
            },
        ),
        (
            "get k --consistency s",
            Op::Get {
                key: b"k".to_vec(),
                options: GetOptions {
                    consistency: Consistency::Serializable,
                    ..GetOptions::default()
                },
            },
        ),
        ("get --prefix p", range(RangeOptions::for_prefix("p"))),
        ("get a c", range(RangeOptions::for_range("a", "c"))),
        ("get a --from-key", range(RangeOptions::for_range("a", ""))),
        ("get '' --prefix", range(RangeOptions::for_range("", ""))),
        (
            "get p --prefix --limit 10 --count-only",
            range(RangeOptions {
                limit: 10,
                count_only: true,
                ..RangeOptions::for_prefix("p")
            }),
        ),
        (
            "get k --count-only",
            range(RangeOptions {
                count_only: true,
                ..RangeOptions::for_range("k", b"k\0".to_vec())
            }),
        ),
        ("del k", Op::delete("k")),
        (
            "delete k --prev-kv",
            Op::Delete {
                key: b"k".to_vec(),
                prev_kv: true,
            },
        ),
    ];
    for (line, expected) in cases {
        assert_eq!(parse_request(line), Ok(expected), "{line}");
    }
}

#[test]
fn bad_requests_say_what_is_wrong() {
    let cases = [
        ("", "empty request"),
        ("set k v", "unknown request \"set\""),
        ("put k", "expected 2 argument(s), found 1"),
        ("put k v w", "found 3"),
        ("put k v --lease 5", "Cairn has no leases"),
        ("put k v --frobnicate", "unknown flag --frobnicate"),
        ("put '' v", "the key is empty"),
        ("get", "get needs KEY"),
        ("get a b c", "get needs KEY"),
        (
            "get a b --prefix",
            "one of RANGE_END, --prefix and --from-key",
        ),
        ("get k --limit", "--limit needs a value"),
        ("get k --limit many", "--limit takes a number, not \"many\""),
        ("get k --consistency x", "--consistency is l"),
        ("get k --sort-by KEY", "--sort-by is not supported"),
        ("del a b", "del takes one key"),
        ("del p --prefix", "del takes one key"),
        (r#"put "k"v x"#, "right after a closing quote"),
        (r#"put "k v"#, "unterminated quote"),
    ];
    for (line, needle) in cases {
        let error = parse_request(line).expect_err(line);
        assert!(error.contains(needle), "{line:?}: {error}");
    }
}

#[test]
fn scripts_have_three_parts() {
    let script =
        parse("mod(\"a\") > \"0\"\nvalue(\"b\") = \"x\"\n\nput a 1\nput b 2\n\nget a\n").unwrap();
    assert_eq!(script.compares.len(), 2);
    assert_eq!(script.success, [Op::put("a", "1"), Op::put("b", "2")]);
    assert_eq!(script.failure, [Op::get("a")]);

    // No comparisons: a leading blank line. No failure part: the end of the input.
    let script = parse("\nput a 1\r\n").unwrap();
    assert!(script.compares.is_empty());
    assert_eq!(script.success, [Op::put("a", "1")]);
    assert!(script.failure.is_empty());

    // Comments and trailing blank lines are allowed; spaces around lines are not words.
    let script = parse("# move one unit\n  mod(\"a\") = 3  \n\n  put a 1\n\n\n\n").unwrap();
    assert_eq!(
        script.compares,
        [Compare::mod_revision("a", CompareOp::Equal, 3)]
    );
    assert_eq!(parse("").unwrap(), TxnScript::default());
}

#[test]
fn script_errors_name_the_line() {
    let cases = [
        (
            "mod(\"a\") > \"0\"\nput a 1\n",
            2,
            "a blank line ends the comparisons",
        ),
        ("mod(\"a\") > \"0\"\nfoo\n", 2, "found no '('"),
        ("\nput a 1\nget\n", 3, "get needs KEY"),
        ("\n\nput a\n", 3, "expected 2 argument(s)"),
        (
            "\nput a 1\n\nget a\n\nput b 2\n",
            6,
            "after the failure requests",
        ),
    ];
    for (text, line, needle) in cases {
        let error = parse(text).expect_err(text);
        assert_eq!(error.location, Location::Line(line), "{text:?}: {error}");
        assert!(error.to_string().starts_with(&format!("line {line}: ")));
        assert!(error.message.contains(needle), "{text:?}: {error}");
    }
}

#[test]
fn reading_stops_after_the_failure_part_and_prompts_each_part() {
    let mut prompts = Vec::new();
    let input = "value(\"k\") = \"v\"\n\nput k w\n\nget k\n\nnot read\n";
    let script = read(
        input.as_bytes(),
        &mut |prompt| prompts.push(prompt.to_string()),
        false,
    )
    .unwrap();
    assert_eq!(script.failure, [Op::get("k")]);
    assert_eq!(prompts, [PROMPT_COMPARES, PROMPT_SUCCESS, PROMPT_FAILURE]);
}

#[test]
fn arguments_name_the_flag_and_its_position() {
    let script = from_arguments(
        &[r#"mod("a") > "0""#.into()],
        &["put a 1".into(), "put b 2".into()],
        &["get a".into()],
    )
    .unwrap();
    assert_eq!(script.success.len(), 2);
    let error = from_arguments(&[], &["put a 1".into(), "put b".into()], &[]).unwrap_err();
    assert_eq!(
        error.location,
        Location::Argument {
            flag: "then",
            index: 2
        }
    );
    assert!(
        error.to_string().starts_with("--then #2: expected 2"),
        "{error}"
    );
    let error = from_arguments(&["nope".into()], &[], &[]).unwrap_err();
    assert!(error.to_string().starts_with("--if #1: "), "{error}");
}

#[test]
fn any_input_is_refused_or_accepted_without_panicking() {
    // Every prefix of tricky lines: parse errors, never panics (byte-boundary slicing,
    // unterminated escapes).
    let lines = [
        r#"value("k\xff\u00e9\101\"") != 'x y' "#,
        r#"put "é\U0001F600" 'ü' --prev-kv"#,
        r#"get "a" "b" --limit=3 --rev 9"#,
    ];
    for line in lines {
        for end in (0..=line.len()).filter(|end| line.is_char_boundary(*end)) {
            let _ = parse_compare(&line[..end]);
            let _ = parse_request(&line[..end]);
            let _ = parse(&line[..end]);
        }
    }
}
