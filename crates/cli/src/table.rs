//! Plain-text tables: left-aligned columns separated by two spaces, no trailing blanks.
//! Widths count characters, which is right for the ASCII and most text that Cairn prints.

/// A header row and rows, columns left-aligned and separated by two spaces.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut all = Vec::with_capacity(rows.len() + 1);
    all.push(headers.iter().map(|h| h.to_string()).collect());
    all.extend(rows.iter().cloned());
    aligned(&all)
}

pub fn aligned(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|column| {
            rows.iter()
                .filter_map(|row| row.get(column))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut text = String::new();
    for row in rows {
        let mut line = String::new();
        for (column, cell) in row.iter().enumerate() {
            if column > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            if column + 1 < row.len() {
                let padding = widths[column] - cell.chars().count();
                line.extend(std::iter::repeat_n(' ', padding));
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_lines_have_no_trailing_blanks() {
        let rows = [
            vec!["a".to_string(), "".to_string()],
            vec!["ccc".to_string(), "d".to_string()],
        ];
        assert_eq!(
            table(&["LONG_HEADER", "X"], &rows),
            "LONG_HEADER  X\na\nccc          d\n"
        );
        assert_eq!(aligned(&[]), "");
    }
}
