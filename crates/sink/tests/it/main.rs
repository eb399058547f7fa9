//! The sinks against the simulator, with their token caches on a real Redis.

mod fixtures;
mod salesforce;
mod zoho;

use std::collections::HashMap;

use crmsync_sink::{CrmPage, CrmSide, CrmSink, Priority};

/// Reads every page of a sink from the start: the records by key (each key once) and the
/// pages.
pub(crate) async fn read_all(sink: &impl CrmSink) -> (HashMap<String, CrmSide>, Vec<CrmPage>) {
    let mut by_key = HashMap::new();
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = sink.read(cursor.as_deref(), Priority::Backfill).await.expect("page");
        for side in &page.records {
            assert!(
                by_key.insert(side.key.clone(), side.clone()).is_none(),
                "{} twice",
                side.key
            );
        }
        cursor = page.next.clone();
        pages.push(page);
        if cursor.is_none() {
            return (by_key, pages);
        }
        assert!(pages.len() < 100, "a read that does not end");
    }
}
