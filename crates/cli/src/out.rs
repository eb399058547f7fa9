//! Standard output and the terminal: every line the CLI prints goes through [`write`] (the
//! crate's `println!` and `print!`), the width tables are laid out for, and whether a person
//! is there to answer a question.

use std::io::{IsTerminal as _, Write as _};

/// Writes to stdout. A closed pipe (`crmsync status --json | head -1`) ends the process at
/// once, quietly and with 0: the reader has what it wanted, as with any Unix tool. Any other
/// write error ends it with 1 and says so.
pub fn write(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args) {
        gone(&e);
    }
}

/// Bytes as they are (a completion script).
pub fn write_bytes(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(bytes).and_then(|()| out.flush()) {
        gone(&e);
    }
}

fn gone(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("error: cannot write to standard output: {e}");
    std::process::exit(1);
}

/// The width tables are laid out for: `COLUMNS` when set (an override: Bash sets it without
/// exporting it, so usually it is not), else the terminal's (stdout's, else stderr's when
/// stdout is piped to a pager), else 120 (a file or a pipe has no width).
pub fn width() -> usize {
    columns(std::env::var("COLUMNS").ok().as_deref())
        .or_else(|| console::Term::stdout().size_checked().map(|(_, w)| usize::from(w)))
        .or_else(|| console::Term::stderr().size_checked().map(|(_, w)| usize::from(w)))
        .unwrap_or(120)
}

/// `COLUMNS`' value, when it is a width.
fn columns(v: Option<&str>) -> Option<usize> {
    v.and_then(|c| c.trim().parse().ok()).filter(|&w: &usize| w > 0)
}

/// Whether stdout is a terminal (a screen to clear, a person reading).
pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}

/// Asks a yes/no question on the terminal; `None` when there is no terminal to ask on (stdin
/// or stderr is not one: a script, a pipe, a cron job).
pub fn confirm(question: &str) -> Option<bool> {
    if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
        return None;
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    if std::io::stdin().read_line(&mut answer).is_err() {
        return Some(false);
    }
    Some(matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}

/// How a column's cells line up.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    /// Numbers.
    Right,
}

/// A table whose columns are as wide as their widest cell, so they line up whatever the
/// data (ids of any length, counts in the millions). The last column is not padded (it is
/// free text: a reason, a message). A table wider than the terminal it is shown on is shown
/// as a block per row instead (see [`Table::blocks`]), never wrapped by the terminal.
pub struct Table {
    columns: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
    /// How many leading columns name a row (the title of its block).
    title: usize,
}

impl Table {
    pub fn new(columns: &[(&'static str, Align)]) -> Self {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
            title: 1,
        }
    }

    /// The first `n` columns name a row (they make its block's title line).
    pub fn title_columns(mut self, n: usize) -> Self {
        self.title = n.clamp(1, self.columns.len());
        self
    }

    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.columns.len());
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as lines, header first.
    pub fn render(&self) -> String {
        let n = self.columns.len();
        let mut widths: Vec<usize> = self.columns.iter().map(|(h, _)| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: &mut dyn Iterator<Item = &str>| {
            let mut s = String::new();
            for (i, cell) in cells.enumerate() {
                if i > 0 {
                    s.push_str("  ");
                }
                let pad = widths[i].saturating_sub(cell.chars().count());
                match self.columns[i].1 {
                    Align::Right => {
                        s.extend(std::iter::repeat_n(' ', pad));
                        s.push_str(cell);
                    }
                    Align::Left if i + 1 == n => s.push_str(cell),
                    Align::Left => {
                        s.push_str(cell);
                        s.extend(std::iter::repeat_n(' ', pad));
                    }
                }
            }
            s.truncate(s.trim_end().len());
            s.push('\n');
            s
        };
        let mut out = line(&mut self.columns.iter().map(|(h, _)| *h));
        for row in &self.rows {
            out.push_str(&line(&mut row.iter().map(String::as_str)));
        }
        out
    }

    /// Each row as a block for a terminal `width` columns wide: its title columns on a line,
    /// then `column value` pairs packed into lines of at most `width` columns.
    pub fn blocks(&self, width: usize) -> String {
        let mut out = String::new();
        for row in &self.rows {
            let title: Vec<&str> = row[..self.title]
                .iter()
                .map(String::as_str)
                .filter(|c| !c.is_empty())
                .collect();
            out.push_str(&title.join("  "));
            out.push('\n');
            let mut line = String::new();
            for ((header, _), cell) in self.columns.iter().zip(row).skip(self.title) {
                if cell.is_empty() {
                    continue;
                }
                let item = format!("{} {cell}", header.to_lowercase());
                if !line.is_empty() && 2 + line.chars().count() + 3 + item.chars().count() > width {
                    out.push_str(&format!("  {line}\n"));
                    line.clear();
                }
                if !line.is_empty() {
                    line.push_str(" · ");
                }
                line.push_str(&item);
            }
            if !line.is_empty() {
                out.push_str(&format!("  {line}\n"));
            }
        }
        out
    }

    /// Prints the table; on a terminal narrower than it, a block per row.
    pub fn print(&self) {
        let table = self.render();
        let widest = table.lines().map(|l| l.chars().count()).max().unwrap_or(0);
        let width = width();
        if stdout_is_terminal() && widest > width {
            print!("{}", self.blocks(width));
        } else {
            print!("{table}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_override_only_when_a_width() {
        assert_eq!(columns(Some("100")), Some(100));
        assert_eq!(columns(Some(" 72 ")), Some(72));
        assert_eq!(columns(Some("0")), None);
        assert_eq!(columns(Some("wide")), None);
        assert_eq!(columns(None), None);
    }

    #[test]
    fn table_columns_line_up_whatever_the_data() {
        let mut t = Table::new(&[("TENANT", Align::Left), ("COUNT", Align::Right), ("WHY", Align::Left)]);
        t.row(vec!["a-very-long-tenant-id".into(), "1".into(), "x".into()]);
        t.row(vec!["b".into(), "2,190".into(), "".into()]);
        assert_eq!(
            t.render(),
            "TENANT                 COUNT  WHY\n\
             a-very-long-tenant-id      1  x\n\
             b                      2,190\n"
        );
        assert_eq!(
            t.blocks(24),
            "a-very-long-tenant-id\n  count 1 · why x\nb\n  count 2,190\n"
        );
        let mut t = Table::new(&[
            ("RUN", Align::Left),
            ("STATUS", Align::Left),
            ("PAGES", Align::Right),
            ("WRITTEN", Align::Right),
        ])
        .title_columns(2);
        t.row(vec!["acme-1".into(), "running".into(), "4/8".into(), "1,200".into()]);
        assert_eq!(t.blocks(22), "acme-1  running\n  pages 4/8\n  written 1,200\n");
    }
}
