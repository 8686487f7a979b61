//! Words of a `cairnctl txn` line, as etcdctl reads them: blank-separated runs, Go
//! double-quoted strings (with escapes, so any bytes), single-quoted strings taken as written.

/// Splits a request line into words: runs of non-blank characters, or quoted strings —
/// `"..."` with Go's escapes (as etcdctl unquotes them, so `"\xff"` is one byte) or `'...'`
/// taken as written.
pub fn split_words(line: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut cursor = Cursor::new(line);
    let mut words = Vec::new();
    loop {
        cursor.skip_spaces();
        if cursor.is_done() {
            return Ok(words);
        }
        words.push(cursor.word_until(' ')?);
        if !cursor.is_done() && !cursor.at_space() {
            return Err(format!(
                "unexpected {:?} right after a closing quote: separate words with spaces",
                cursor.rest()
            ));
        }
    }
}

/// A position in a line.
pub(super) struct Cursor<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    pub(super) fn new(text: &'a str) -> Self {
        Self { text, at: 0 }
    }

    pub(super) fn rest(&self) -> &'a str {
        &self.text[self.at..]
    }

    pub(super) fn is_done(&self) -> bool {
        self.at >= self.text.len()
    }

    pub(super) fn at_space(&self) -> bool {
        self.rest().starts_with(char::is_whitespace)
    }

    pub(super) fn skip_spaces(&mut self) {
        let rest = self.rest();
        self.at += rest.len() - rest.trim_start().len();
    }

    pub(super) fn eat(&mut self, token: &str) -> bool {
        if self.rest().starts_with(token) {
            self.at += token.len();
            true
        } else {
            false
        }
    }

    /// A quoted string, or the text up to `stop` (or a blank, or the end).
    pub(super) fn word_until(&mut self, stop: char) -> Result<Vec<u8>, String> {
        let rest = self.rest();
        if let Some(quoted) = rest.strip_prefix('"') {
            let (bytes, used) = unquote(quoted)?;
            self.at += 1 + used;
            return Ok(bytes);
        }
        if let Some(quoted) = rest.strip_prefix('\'') {
            let Some(end) = quoted.find('\'') else {
                return Err(format!("unterminated quote in {rest:?}"));
            };
            self.at += end + 2;
            return Ok(quoted.as_bytes()[..end].to_vec());
        }
        let end = rest
            .find(|c: char| c == stop || c.is_whitespace())
            .unwrap_or(rest.len());
        self.at += end;
        Ok(rest.as_bytes()[..end].to_vec())
    }
}

/// Decodes a Go double-quoted string (`text` starts after the opening quote): the bytes and
/// how many bytes of `text` it used, closing quote included.
fn unquote(text: &str) -> Result<(Vec<u8>, usize), String> {
    let mut bytes = Vec::new();
    let mut chars = text.char_indices();
    let bad = |what: String| -> Result<(Vec<u8>, usize), String> {
        Err(format!("{what} in the quoted string \"{text}"))
    };
    while let Some((index, c)) = chars.next() {
        match c {
            '"' => return Ok((bytes, index + 1)),
            '\\' => {
                let Some((_, escape)) = chars.next() else {
                    break;
                };
                let simple = match escape {
                    'a' => Some(0x07),
                    'b' => Some(0x08),
                    'f' => Some(0x0c),
                    'n' => Some(b'\n'),
                    'r' => Some(b'\r'),
                    't' => Some(b'\t'),
                    'v' => Some(0x0b),
                    '\\' => Some(b'\\'),
                    '"' => Some(b'"'),
                    '\'' => Some(b'\''),
                    _ => None,
                };
                if let Some(byte) = simple {
                    bytes.push(byte);
                    continue;
                }
                let (radix, digits) = match escape {
                    'x' => (16, 2),
                    'u' => (16, 4),
                    'U' => (16, 8),
                    '0'..='7' => (8, 3),
                    other => return bad(format!("unknown escape \\{other}")),
                };
                let mut number = if radix == 8 {
                    escape.to_digit(8).expect("an octal digit")
                } else {
                    0
                };
                let needed = if radix == 8 { digits - 1 } else { digits };
                for _ in 0..needed {
                    let digit = chars.next().and_then(|(_, d)| d.to_digit(radix));
                    let Some(digit) = digit else {
                        return bad(format!("a short \\{escape} escape"));
                    };
                    number = number * radix + digit;
                }
                match escape {
                    'u' | 'U' => match char::from_u32(number) {
                        Some(c) => bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                        None => return bad(format!("\\{escape}{number:x} is not a character")),
                    },
                    _ => match u8::try_from(number) {
                        Ok(byte) => bytes.push(byte),
                        Err(_) => return bad(format!("octal escape {number:o} is above 377")),
                    },
                }
            }
            c => bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    Err(format!("unterminated quote in \"{text}"))
}
