//! Output formats for list commands: a plain table for people, JSON or
//! YAML for scripts.

use serde::Serialize;

#[derive(Debug, Clone, Copy, Default, clap::ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Json,
    Yaml,
}

#[derive(Debug, Clone, Default, clap::Args)]
pub struct OutputArg {
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Table, env = "INFRA_OUTPUT")]
    pub output: Format,
}

/// Prints `items` as a table with `headers` (one row per item from `row`),
/// or serialised whole.
pub(crate) fn print<T: Serialize>(
    fmt: Format,
    items: &[T],
    headers: &[&str],
    row: impl Fn(&T) -> Vec<String>,
) -> anyhow::Result<()> {
    match fmt {
        Format::Json => println!("{}", serde_json::to_string_pretty(items)?),
        Format::Yaml => print!("{}", yaml_serde::to_string(items)?),
        Format::Table => {
            if items.is_empty() {
                eprintln!("(none)");
                return Ok(());
            }
            let mut t = comfy_table::Table::new();
            t.load_style(comfy_table::presets::NOTHING);
            t.set_header(headers.iter().map(|h| h.to_uppercase()));
            for i in items {
                t.add_row(row(i).into_iter().map(|cell| printable(&cell)));
            }
            let text = t.to_string();
            for line in text.lines() {
                println!("{}", line.strip_prefix(' ').unwrap_or(line).trim_end());
            }
        }
    }
    Ok(())
}

/// A time as a short, readable string: `2026-11-22 10:04`.
/// A cell as a terminal shows it: control characters (escape sequences
/// that could rewrite the screen or the clipboard, bidi overrides) as
/// `\u{..}`. What the server stores is anyone's text: a login attempt's
/// email, an audit detail.
fn printable(cell: &str) -> String {
    let bidi = |c: char| matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}');
    cell.chars()
        .map(|c| {
            if c.is_control() || bidi(c) {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

pub(crate) fn when(rfc3339: &str) -> String {
    rfc3339
        .get(..16)
        .map(|s| s.replace('T', " "))
        .unwrap_or_else(|| rfc3339.to_owned())
}

#[cfg(test)]
mod printable_tests {
    #[test]
    fn escapes_cannot_reach_the_terminal() {
        assert_eq!(super::printable("a\u{1b}]52;c;eA==\u{7}b"), "a\\u{1b}]52;c;eA==\\u{7}b");
        assert_eq!(super::printable("v1\u{202e}"), "v1\\u{202e}");
        assert_eq!(super::printable("plain text é"), "plain text é");
    }
}
