//! Log setup: text for terminals, JSON lines for log pipelines; the filter from `CRMSYNC_LOG`.

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Text,
    Json,
}

pub fn init(format: Format, default_filter: &str) {
    let filter = EnvFilter::try_from_env("CRMSYNC_LOG").unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        Format::Text => builder.init(),
        Format::Json => builder.json().flatten_event(true).with_current_span(false).init(),
    }
}
