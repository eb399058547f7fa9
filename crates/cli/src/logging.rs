//! Log setup: text for terminals, JSON lines for log pipelines; the filter from `CRMSYNC_LOG`.
//!
//! Text lines carry colours only when stderr is a terminal and `NO_COLOR` is unset (or empty,
//! as no-color.org says): a file or a pipe gets plain text, not escape codes. Their times are
//! tracing-subscriber's RFC 3339 UTC (`2026-12-03T14:05:09.123456Z`); JSON lines are for
//! machines and keep every field as it is.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Text,
    Json,
}

/// Whether text logs are coloured, given whether stderr is a terminal and `NO_COLOR`'s value.
fn colours(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

pub fn init(format: Format, default_filter: &str) {
    let filter = EnvFilter::try_from_env("CRMSYNC_LOG").unwrap_or_else(|_| EnvFilter::new(default_filter));
    let ansi = colours(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR").as_deref());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        Format::Text => builder.with_ansi(ansi).init(),
        Format::Json => builder.json().flatten_event(true).with_current_span(false).init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(colours(true, None));
        assert!(colours(true, Some(OsStr::new(""))));
        assert!(!colours(true, Some(OsStr::new("1"))));
        assert!(!colours(false, None));
    }
}
