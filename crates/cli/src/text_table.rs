//! Plain-text tables for the operator commands.

/// Longest cell printed; longer values are cut with `…`.
const MAX_CELL_CHARS: usize = 48;

/// Cuts a value to [`MAX_CELL_CHARS`] characters.
pub fn cell(text: &str) -> String {
    let single_line = text.replace(['\n', '\r', '\t'], " ");
    if single_line.chars().count() <= MAX_CELL_CHARS {
        return single_line;
    }
    let mut cut: String = single_line.chars().take(MAX_CELL_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// Renders rows under a header, each column as wide as its widest cell.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, value) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(value.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c}{}", " ".repeat(w.saturating_sub(c.chars().count()))))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    let mut out = String::new();
    out.push_str(&line(header.to_vec()));
    out.push('\n');
    out.push_str(&line(widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().iter().map(String::as_str).collect()));
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align() {
        let text = render(&["a", "long header"], &[vec!["value".into(), "x".into()]]);
        assert_eq!(text, "a      long header\n-----  -----------\nvalue  x\n");
    }

    #[test]
    fn long_cells_are_cut() {
        let long = "x".repeat(100);
        assert_eq!(cell(&long).chars().count(), MAX_CELL_CHARS);
        assert!(cell(&long).ends_with('…'));
    }
}
