//! Printing: aligned tables for people, JSON for scripts.

use clap::ValueEnum;
use serde::Serialize;

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// An aligned table.
    Table,
    /// JSON: one object per line.
    Json,
}

/// Prints `rows` as a table under `headers`, or each row's JSON form.
pub(crate) fn print_rows<T: Serialize>(
    format: Format,
    headers: &[&str],
    rows: &[T],
    cells: impl Fn(&T) -> Vec<String>,
) {
    match format {
        Format::Json => {
            for row in rows {
                println!("{}", json_line(row));
            }
        }
        Format::Table => print!("{}", table(headers, rows.iter().map(cells).collect())),
    }
}

/// One value as a JSON line.
pub(crate) fn json_line<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        padded.join("  ").trim_end().to_owned() + "\n"
    };
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let text = table(
            &["topic", "partitions"],
            vec![
                vec!["orders".into(), "8".into()],
                vec!["a".into(), "12".into()],
            ],
        );
        assert_eq!(text, "topic   partitions\norders  8\na       12\n");
    }
}
