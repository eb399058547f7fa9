//! The write buffer's scripts against a real Redis, called directly: how changes collapse,
//! order, share emails and move records, as a flush would see them.

use std::time::Duration;

use crmsync_domain::{CrmRecord, MatchKey};
use crmsync_producer::{BufferError, Change, Entry, Op, Pushing, Source, WriteBuffer, Written, email_key};
use crmsync_tenants::TenantKeys;
use crmsync_testkit::RedisServer;

const DEST: &str = "0a1b2c3d4e5f";

fn live(redis: &RedisServer, dest: &str) {
    let _: () = redis::cmd("SET")
        .arg(TenantKeys::new("crmsync", "t1").live())
        .arg(dest)
        .query(&mut redis.conn())
        .expect("SET");
}

fn buffer_of(redis: &RedisServer, mode: MatchKey) -> WriteBuffer {
    live(redis, DEST);
    let conn = crmsync_redis::connect(redis.client(), Duration::from_secs(5)).expect("conn");
    WriteBuffer::new(conn, "crmsync", "t1", DEST, mode, 100)
}

fn buffer(redis: &RedisServer) -> WriteBuffer {
    buffer_of(redis, MatchKey::Email)
}

fn record(email: &str, last: &str) -> CrmRecord {
    CrmRecord {
        first_name: None,
        last_name: last.into(),
        email: email.into(),
        phone: None,
        company: None,
        title: None,
    }
}

fn upsert(cid: &str, at_s: u64, email: &str, last: &str) -> Change {
    Change::Upsert {
        contact_id: cid.into(),
        at_ms: at_s * 1000,
        record: record(email, last),
    }
}

fn delete(cid: &str, at_s: u64) -> Change {
    Change::Delete {
        contact_id: cid.into(),
        at_ms: at_s * 1000,
    }
}

fn unmap(cid: &str, at_s: u64) -> Change {
    Change::Unmap {
        contact_id: cid.into(),
        at_ms: at_s * 1000,
    }
}

/// What a flush does with an entry, in short.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Did {
    /// Upsert of (email, last name).
    Upsert(String, String),
    /// Move of the record `rid` (when known) to (email, last name).
    Move(Option<String>, String, String),
    /// Deletion of the record `rid` (when known).
    Delete(Option<String>),
}

fn did(e: &Entry) -> Did {
    match &e.op {
        Op::Upsert(r) => Did::Upsert(r.email.clone(), r.last_name.clone()),
        Op::Move(r) => Did::Move(e.rid.clone(), r.email.clone(), r.last_name.clone()),
        Op::Delete => Did::Delete(e.rid.clone()),
    }
}

/// The record id the simulated CRM gives a contact's record (CRM ids have no spaces).
fn rid(cid: &str) -> String {
    format!("r-{}", cid.replace(' ', "_"))
}

/// Writes a taken batch as a flush would: every record written under [`rid`] (a move keeps
/// the record it moves), every deletion done.
async fn write_all(b: &WriteBuffer, flush: &str) -> Vec<(String, Did)> {
    let batch = b.take(flush, 100, 1, None).await.expect("take");
    let results: Vec<(&Entry, Written)> = batch
        .iter()
        .map(|e| {
            let w = match (&e.op, &e.rid) {
                (Op::Delete, _) => Written::Deleted,
                (Op::Move(_), Some(rid)) => Written::Record(rid.clone()),
                _ => Written::Record(rid(&e.contact_id)),
            };
            (e, w)
        })
        .collect();
    b.done(flush, &results, &[], &[]).await.expect("done");
    batch.iter().map(|e| (e.contact_id.clone(), did(e))).collect()
}

fn up(email: &str, last: &str) -> Did {
    Did::Upsert(email.into(), last.into())
}

#[tokio::test]
async fn changes_collapse_to_the_latest_and_older_ones_are_stale() {
    let redis = RedisServer::start();
    let b = buffer(&redis);
    let p = b
        .push(&Source::Feed, false, &[upsert("c1", 10, "a@x.io", "One")])
        .await
        .expect("push");
    assert_eq!((p.pushed, p.waiting), (1, 1));
    let p = b
        .push(&Source::Feed, false, &[upsert("c1", 12, "a@x.io", "Two")])
        .await
        .expect("push");
    assert_eq!(
        (p.pushed, p.waiting),
        (1, 1),
        "the newer change replaces the waiting one"
    );
    let p = b
        .push(&Source::Feed, false, &[upsert("c1", 11, "a@x.io", "Late")])
        .await
        .expect("push");
    assert_eq!(
        (p.pushed, p.stale),
        (0, 1),
        "an older event arriving late changes nothing"
    );
    assert_eq!(write_all(&b, "f1").await, vec![("c1".to_owned(), up("a@x.io", "Two"))]);
    let p = b
        .push(&Source::Feed, false, &[upsert("c1", 13, "a@x.io", "Two")])
        .await
        .expect("push");
    assert_eq!((p.pushed, p.unchanged), (0, 1), "what was written costs nothing again");
    let stats = b.feed_stats().await.expect("stats");
    let c = |k: &str| stats.get(k).copied().unwrap_or(0);
    assert_eq!(
        (c("changes"), c("pushed"), c("stale"), c("unchanged")),
        (4, 2, 1, 1),
        "{stats:?}"
    );
}

#[tokio::test]
async fn two_events_in_one_second_have_the_contact_re_read() {
    let redis = RedisServer::start();
    let b = buffer(&redis);
    b.push(&Source::Feed, false, &[upsert("c1", 10, "a@x.io", "One")])
        .await
        .expect("push");
    assert!(b.take_refresh(10).await.expect("refresh").is_empty());
    b.push(&Source::Feed, false, &[upsert("c1", 10, "a@x.io", "Two")])
        .await
        .expect("push");
    assert_eq!(b.take_refresh(10).await.expect("refresh"), vec!["c1".to_owned()]);
    // The re-read is forced and stamped no earlier than what was seen: an event older than
    // it that arrives afterwards is stale, and the re-read never triggers another one.
    let p = b
        .push(&Source::Feed, true, &[upsert("c1", 5, "a@x.io", "Fresh")])
        .await
        .expect("push");
    assert_eq!(p.pushed, 1);
    assert!(b.take_refresh(10).await.expect("refresh").is_empty());
    let p = b
        .push(&Source::Feed, false, &[upsert("c1", 9, "a@x.io", "Old")])
        .await
        .expect("push");
    assert_eq!(p.stale, 1);
    assert_eq!(
        write_all(&b, "f1").await,
        vec![("c1".to_owned(), up("a@x.io", "Fresh"))]
    );
}

#[tokio::test]
async fn an_email_change_moves_the_record_and_a_later_deletion_deletes_it_where_it_is() {
    let redis = RedisServer::start();
    let b = buffer(&redis);
    b.push(&Source::Feed, false, &[upsert("c1", 10, "old@x.io", "L")])
        .await
        .expect("push");
    write_all(&b, "f1").await;
    b.push(&Source::Feed, false, &[upsert("c1", 11, "new@x.io", "L")])
        .await
        .expect("push");
    // Deleted before the move ran: the record still sits under the old email, and that is
    // the one deleted (by the id crmsync wrote it under).
    b.push(&Source::Feed, false, &[delete("c1", 12)]).await.expect("push");
    let batch = b.take("f2", 100, 1, None).await.expect("take");
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0].rk, email_key("old@x.io"));
    assert_eq!(did(&batch[0]), Did::Delete(Some("r-c1".into())));
    b.done("f2", &[(&batch[0], Written::Deleted)], &[], &[])
        .await
        .expect("done");

    b.push(&Source::Feed, false, &[upsert("c2", 20, "p@x.io", "L")])
        .await
        .expect("push");
    write_all(&b, "f3").await;
    b.push(&Source::Feed, false, &[upsert("c2", 21, "q@x.io", "L")])
        .await
        .expect("push");
    assert_eq!(
        write_all(&b, "f4").await,
        vec![(
            "c2".to_owned(),
            Did::Move(Some("r-c2".into()), "q@x.io".into(), "L".into())
        )]
    );
    // The record is known under its new email now: an unchanged change costs nothing, and a
    // deletion deletes it there.
    let p = b
        .push(&Source::Feed, false, &[upsert("c2", 22, "q@x.io", "L")])
        .await
        .expect("push");
    assert_eq!(p.unchanged, 1);
    b.push(&Source::Feed, false, &[delete("c2", 23)]).await.expect("push");
    assert_eq!(
        write_all(&b, "f5").await,
        vec![("c2".to_owned(), Did::Delete(Some("r-c2".into())))]
    );
}

#[tokio::test]
async fn a_shared_email_is_owned_by_the_smallest_id_and_passes_on_when_it_leaves() {
    let redis = RedisServer::start();
    let b = buffer(&redis);
    b.push(&Source::Feed, false, &[upsert("m", 10, "s@x.io", "Mike")])
        .await
        .expect("push");
    write_all(&b, "f1").await;
    // A smaller id takes the email over: its fields replace the record's.
    b.push(&Source::Feed, false, &[upsert("a", 11, "s@x.io", "Anna")])
        .await
        .expect("push");
    // A larger id joins: skipped, the owner's fields stay.
    let p = b
        .push(&Source::Feed, false, &[upsert("z", 12, "s@x.io", "Zed")])
        .await
        .expect("push");
    assert_eq!((p.pushed, p.shared), (0, 1));
    assert_eq!(write_all(&b, "f2").await, vec![("a".to_owned(), up("s@x.io", "Anna"))]);
    // The owner leaves: the next smallest is re-read, and its fields are written even though
    // they hash as what it wrote before (the record holds Anna's now).
    b.push(&Source::Feed, false, &[delete("a", 13)]).await.expect("push");
    assert_eq!(b.take_refresh(10).await.expect("refresh"), vec!["m".to_owned()]);
    let p = b
        .push(&Source::Feed, true, &[upsert("m", 13, "s@x.io", "Mike")])
        .await
        .expect("push");
    assert_eq!(p.pushed, 1);
    assert_eq!(write_all(&b, "f3").await, vec![("m".to_owned(), up("s@x.io", "Mike"))]);
    // Without the re-read, an unforced event with Mike's unchanged fields still writes them.
    b.push(&Source::Feed, false, &[upsert("a", 14, "s@x.io", "Anna")])
        .await
        .expect("push");
    write_all(&b, "f4").await;
    let p = b
        .push(&Source::Feed, false, &[upsert("a", 15, "t@x.io", "Anna")])
        .await
        .expect("push");
    assert_eq!(p.pushed, 1);
    b.take_refresh(10).await.expect("refresh");
    let p = b
        .push(&Source::Feed, false, &[upsert("m", 16, "s@x.io", "Mike")])
        .await
        .expect("push");
    assert_eq!((p.pushed, p.unchanged), (1, 0), "Mike's record must be rewritten");
}

#[tokio::test]
async fn a_contact_that_loses_its_email_has_its_record_deleted_and_gets_it_back() {
    let redis = RedisServer::start();
    let b = buffer(&redis);
    b.push(&Source::Feed, false, &[upsert("c1", 10, "a@x.io", "L")])
        .await
        .expect("push");
    write_all(&b, "f1").await;
    b.push(&Source::Feed, false, &[unmap("c1", 11)]).await.expect("push");
    assert_eq!(
        write_all(&b, "f2").await,
        vec![("c1".to_owned(), Did::Delete(Some("r-c1".into())))]
    );
    // Its email back: written again (the record is gone), and no deletion is left waiting.
    let p = b
        .push(&Source::Feed, false, &[upsert("c1", 12, "a@x.io", "L")])
        .await
        .expect("push");
    assert_eq!((p.pushed, p.unchanged), (1, 0));
    assert_eq!(write_all(&b, "f3").await, vec![("c1".to_owned(), up("a@x.io", "L"))]);
    // An unmap while the record's deletion waits, then the email again: the deletion is moot.
    b.push(&Source::Feed, false, &[unmap("c1", 13)]).await.expect("push");
    b.push(&Source::Feed, false, &[upsert("c1", 14, "a@x.io", "L2")])
        .await
        .expect("push");
    assert_eq!(write_all(&b, "f4").await, vec![("c1".to_owned(), up("a@x.io", "L2"))]);
}

#[tokio::test]
async fn a_deletion_outranks_older_updates_and_yields_to_newer_ones() {
    let redis = RedisServer::start();
    let b = buffer(&redis);
    // Tombstones are kept 96 hours from the deletion's own time: these events are recent.
    let t = crmsync_redis::now_ms() / 1000 - 100;
    b.push(&Source::Feed, false, &[upsert("c1", t + 10, "a@x.io", "L")])
        .await
        .expect("push");
    write_all(&b, "f1").await;
    b.push(&Source::Feed, false, &[delete("c1", t + 20)])
        .await
        .expect("push");
    // An update stamped before the deletion (a late retry of Nylas's) is stale, and so is one
    // in the same second.
    for at in [t + 19, t + 20] {
        let p = b
            .push(&Source::Feed, false, &[upsert("c1", at, "a@x.io", "Ghost")])
            .await
            .expect("push");
        assert_eq!(p.stale, 1, "at {}", at - t);
    }
    assert_eq!(
        write_all(&b, "f2").await,
        vec![("c1".to_owned(), Did::Delete(Some("r-c1".into())))]
    );
    // A newer one is the contact created again.
    let p = b
        .push(&Source::Feed, false, &[upsert("c1", t + 21, "a@x.io", "Back")])
        .await
        .expect("push");
    assert_eq!(p.pushed, 1);
    assert_eq!(write_all(&b, "f3").await, vec![("c1".to_owned(), up("a@x.io", "Back"))]);
}

#[tokio::test]
async fn writes_to_one_email_never_overlap_between_flushes() {
    let redis = RedisServer::start();
    let b = buffer(&redis);
    b.push(&Source::Feed, false, &[upsert("m", 10, "s@x.io", "Mike")])
        .await
        .expect("push");
    let first = b.take("f1", 100, 1, None).await.expect("take");
    assert_eq!(first.len(), 1);
    // While f1 writes it, another contact takes the email over: that write waits for f1.
    b.push(&Source::Feed, false, &[upsert("a", 11, "s@x.io", "Anna")])
        .await
        .expect("push");
    b.push(&Source::Feed, false, &[upsert("k", 11, "k@x.io", "Kim")])
        .await
        .expect("push");
    let second = b.take("f2", 100, 1, None).await.expect("take");
    assert_eq!(
        second.iter().map(|e| e.contact_id.as_str()).collect::<Vec<_>>(),
        vec!["k"]
    );
    b.done("f2", &[(&second[0], Written::Record("r-k".into()))], &[], &[])
        .await
        .expect("done");
    b.done("f1", &[(&first[0], Written::Record("r-m".into()))], &[], &[])
        .await
        .expect("done");
    let third = b.take("f3", 100, 1, None).await.expect("take");
    assert_eq!(
        third.iter().map(|e| e.contact_id.as_str()).collect::<Vec<_>>(),
        vec!["a"]
    );
    // A flush that runs again resumes its own batch, and one that is done finds nothing.
    assert_eq!(b.take("f3", 100, 1, None).await.expect("take"), third);
    b.done("f3", &[(&third[0], Written::Record("r-m".into()))], &[], &[])
        .await
        .expect("done");
    assert!(b.take("f3", 100, 1, None).await.expect("take").is_empty());
}

#[tokio::test]
async fn a_batch_comes_back_after_its_lease_expired_unless_a_newer_change_replaced_it() {
    let redis = RedisServer::start();
    let b = buffer(&redis);
    b.push(
        &Source::Feed,
        false,
        &[upsert("c1", 10, "a@x.io", "A"), upsert("c2", 10, "b@x.io", "B")],
    )
    .await
    .expect("push");
    let held = b.take("gone", 100, 1, None).await.expect("take");
    assert_eq!(held.len(), 2);
    // While the flush is gone, c2 changes again.
    b.push(&Source::Feed, false, &[upsert("c2", 11, "b@x.io", "B2")])
        .await
        .expect("push");
    // Its lease ends (as an hour later).
    let _: () = redis::cmd("ZADD")
        .arg(b.keys().flushes())
        .arg(0)
        .arg("gone")
        .query(&mut redis.conn())
        .expect("ZADD");
    let mut back = write_all(&b, "next").await;
    back.sort();
    assert_eq!(
        back,
        vec![
            ("c1".to_owned(), up("a@x.io", "A")),
            ("c2".to_owned(), up("b@x.io", "B2"))
        ],
        "c1 came back; c2's newer change replaced its held one"
    );
    assert_eq!(
        b.waiting().await.expect("waiting"),
        crmsync_producer::Waiting::default(),
        "nothing left, counters even"
    );
    // The flush that lost its batch records nothing.
    let results: Vec<(&Entry, Written)> = held.iter().map(|e| (e, Written::Record("x".into()))).collect();
    assert!(b.done("gone", &results, &[], &[]).await.expect("done").is_empty());
    let stats = b.feed_stats().await.expect("stats");
    assert_eq!(
        stats.get("coalesced").copied(),
        Some(1),
        "c2's held entry, replaced and never written, counts as coalesced: {stats:?}"
    );
}

/// Writes a taken batch as [`write_all`] does and counts each record as a worker would:
/// `inserted` for a record new to `existing`, `updated` for one it holds, `deleted`.
/// Returns how many entries it wrote.
async fn flush_counted(b: &WriteBuffer, flush: &str, existing: &mut std::collections::BTreeSet<String>) -> usize {
    let batch = b.take(flush, 100, 1, None).await.expect("take");
    let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
    let results: Vec<(&Entry, Written)> = batch
        .iter()
        .map(|e| {
            let (w, field) = match (&e.op, &e.rid) {
                (Op::Delete, _) => {
                    existing.remove(&e.rk);
                    (Written::Deleted, "deleted")
                }
                (Op::Move(_), Some(rid)) => (Written::Record(rid.clone()), "updated"),
                _ if existing.insert(e.rk.clone()) => (Written::Record(rid(&e.contact_id)), "inserted"),
                _ => (Written::Record(rid(&e.contact_id)), "updated"),
            };
            *counts.entry(field.to_owned()).or_default() += 1;
            (e, w)
        })
        .collect();
    let counts: Vec<crmsync_producer::FlushCount> = counts
        .into_iter()
        .map(|(field, n)| crmsync_producer::FlushCount {
            source: Source::Feed,
            field,
            n,
        })
        .collect();
    b.done(flush, &results, &counts, &[]).await.expect("done");
    batch.len()
}

/// Issue 15: the change feed's counters add up. Every change is exactly one of stale, shared,
/// unchanged, queued or noop; every entry queued is written (inserted, updated, deleted,
/// failed), coalesced (replaced or cancelled by a newer change before it was written) or
/// still waiting.
#[tokio::test]
async fn the_change_feed_counters_partition_the_changes_and_the_entries() {
    let redis = RedisServer::start();
    let b = buffer(&redis);
    let mut crm = std::collections::BTreeSet::new();
    let push = |c: Change| {
        let b = &b;
        async move { b.push(&Source::Feed, false, &[c]).await.expect("push") }
    };
    push(upsert("c1", 10, "a@x.io", "One")).await; // queued
    push(upsert("c1", 12, "a@x.io", "Two")).await; // queued; coalesces the first
    push(upsert("c1", 11, "a@x.io", "Late")).await; // stale
    push(delete("ghost", 10)).await; // noop: no record to delete
    push(upsert("c5", 10, "s@x.io", "Five")).await; // queued
    assert_eq!(flush_counted(&b, "f1", &mut crm).await, 2); // inserted 2
    push(upsert("c3", 10, "s@x.io", "Three")).await; // queued: takes s@x.io over from c5
    push(upsert("c9", 10, "s@x.io", "Nine")).await; // shared: c3 owns it
    push(upsert("c1", 13, "a@x.io", "Two")).await; // unchanged
    push(upsert("c7", 10, "b@x.io", "Seven")).await; // queued
    push(delete("c7", 11)).await; // queued: the record's deletion; coalesces c7's upsert
    push(unmap("c9", 12)).await; // noop: c9 owns no record
    // updated 1 (c3), then deleted 1 (b@x.io): a batch holds one kind of write
    assert_eq!(flush_counted(&b, "f2", &mut crm).await, 1);
    assert_eq!(flush_counted(&b, "f3", &mut crm).await, 1);
    assert_eq!(flush_counted(&b, "f4", &mut crm).await, 0);
    let stats = b.feed_stats().await.expect("stats");
    let c = |k: &str| stats.get(k).copied().unwrap_or(0);
    assert_eq!(
        (
            c("changes"),
            c("stale"),
            c("shared"),
            c("unchanged"),
            c("queued"),
            c("noop")
        ),
        (11, 1, 1, 1, 6, 2),
        "{stats:?}"
    );
    assert_eq!(
        c("changes"),
        c("stale") + c("shared") + c("unchanged") + c("queued") + c("noop"),
        "every change is counted once: {stats:?}"
    );
    assert_eq!(
        (c("pushed"), c("inserted"), c("updated"), c("deleted"), c("coalesced")),
        (6, 2, 1, 1, 2),
        "{stats:?}"
    );
    let waiting = b.waiting().await.expect("waiting");
    assert_eq!(
        c("pushed"),
        c("inserted") + c("updated") + c("deleted") + c("coalesced") + waiting.feed,
        "every entry is written, coalesced or waiting: {stats:?}"
    );
}

#[tokio::test]
async fn ids_with_quotes_backslashes_tabs_newlines_and_non_ascii_are_just_ids() {
    let redis = RedisServer::start();
    let b = buffer(&redis);
    let odd = ["c\"1", "c\\2", "c\t3", "c\n4", "cé5 ✓", "x:6", "c 7"];
    let changes: Vec<Change> = odd
        .iter()
        .enumerate()
        .map(|(i, cid)| upsert(cid, 10, &format!("p{i}@x.io"), cid))
        .collect();
    let p = b.push(&Source::Feed, false, &changes).await.expect("push");
    assert_eq!(p.pushed, odd.len() as u64);
    let mut written = write_all(&b, "f1").await;
    written.sort();
    let mut want: Vec<(String, Did)> = odd
        .iter()
        .enumerate()
        .map(|(i, cid)| (cid.to_string(), up(&format!("p{i}@x.io"), cid)))
        .collect();
    want.sort();
    assert_eq!(written, want);
    // They change email, and are deleted: each by its own record.
    let moves: Vec<Change> = odd
        .iter()
        .enumerate()
        .map(|(i, cid)| upsert(cid, 11, &format!("q{i}@x.io"), cid))
        .collect();
    b.push(&Source::Feed, false, &moves).await.expect("push");
    for (cid, d) in write_all(&b, "f2").await {
        assert_eq!(d, Did::Move(Some(rid(&cid)), d_email(&d), cid.clone()), "{cid:?}");
    }
    let deletes: Vec<Change> = odd.iter().map(|cid| delete(cid, 12)).collect();
    b.push(&Source::Feed, false, &deletes).await.expect("push");
    let mut deleted = write_all(&b, "f3").await;
    deleted.sort();
    let mut want: Vec<(String, Did)> = odd
        .iter()
        .map(|cid| (cid.to_string(), Did::Delete(Some(rid(cid)))))
        .collect();
    want.sort();
    assert_eq!(deleted, want);
}

fn d_email(d: &Did) -> String {
    match d {
        Did::Move(_, e, _) | Did::Upsert(e, _) => e.clone(),
        Did::Delete(_) => String::new(),
    }
}

#[tokio::test]
async fn matched_on_the_contact_id_every_contact_has_its_own_record() {
    let redis = RedisServer::start();
    let b = buffer_of(&redis, MatchKey::ContactId);
    b.push(
        &Source::Feed,
        false,
        &[
            upsert("c1", 10, "same@x.io", "One"),
            upsert("c2", 10, "same@x.io", "Two"),
        ],
    )
    .await
    .expect("push");
    let mut first = write_all(&b, "f1").await;
    first.sort();
    assert_eq!(
        first,
        vec![
            ("c1".to_owned(), up("same@x.io", "One")),
            ("c2".to_owned(), up("same@x.io", "Two"))
        ],
        "a shared email is two records"
    );
    // An email change is an update of the same record (its key is the contact).
    let p = b
        .push(&Source::Feed, false, &[upsert("c1", 11, "new@x.io", "One")])
        .await
        .expect("push");
    assert_eq!(p.pushed, 1);
    // The upsert carries the record crmsync wrote for the contact (Salesforce keeps writing
    // the object it wrote).
    let taken = b.take("f2", 100, 1, None).await.expect("take");
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].rid.as_deref(), Some("r-c1"));
    assert_eq!(
        write_all(&b, "f2").await,
        vec![("c1".to_owned(), up("new@x.io", "One"))],
        "the flush resumes its own batch"
    );
    b.push(&Source::Feed, false, &[delete("c2", 12)]).await.expect("push");
    assert_eq!(
        write_all(&b, "f3").await,
        vec![("c2".to_owned(), Did::Delete(Some("r-c2".into())))]
    );
}

#[tokio::test]
async fn a_notification_is_accepted_once_however_many_copies_arrive_at_once() {
    let redis = RedisServer::start();
    let b = buffer(&redis);
    let change = [upsert("c1", 10, "a@x.io", "L")];
    let copies = (0..30).map(|_| b.push_notification(&Source::Feed, false, &change, Some("n-1")));
    let outcomes = futures_util::future::join_all(copies).await;
    let accepted = outcomes.iter().filter(|o| matches!(o, Ok(Pushing::Pushed(_)))).count();
    let duplicates = outcomes.iter().filter(|o| matches!(o, Ok(Pushing::Duplicate))).count();
    assert_eq!((accepted, duplicates), (1, 29));
}

#[tokio::test]
async fn nothing_is_written_for_a_destination_the_tenant_left() {
    let redis = RedisServer::start();
    let b = buffer(&redis);
    b.push(&Source::Feed, false, &[upsert("c1", 10, "a@x.io", "L")])
        .await
        .expect("push");
    live(&redis, "ffffffffffff");
    let before: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut redis.conn()).expect("KEYS");
    let err = b
        .push(&Source::Feed, false, &[upsert("c2", 10, "b@x.io", "L")])
        .await
        .expect_err("gone");
    assert!(matches!(err, BufferError::Gone), "{err}");
    assert!(matches!(b.take("f1", 100, 1, None).await, Err(BufferError::Gone)));
    let after: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut redis.conn()).expect("KEYS");
    assert_eq!(before.len(), after.len(), "no key written");
}

#[tokio::test]
async fn full_batches_are_scheduled_once_each() {
    let redis = RedisServer::start();
    let b = buffer(&redis);
    let page = |from: usize, n: usize| -> Vec<Change> {
        (from..from + n)
            .map(|i| upsert(&format!("c{i:04}"), 10, &format!("p{i}@x.io"), "L"))
            .collect()
    };
    let slots = |names: &[&str]| -> Vec<String> { names.iter().map(|n| n.to_string()).collect() };
    let scheduled = || -> Vec<String> {
        let mut v: Vec<String> = redis::cmd("SMEMBERS")
            .arg(TenantKeys::new("crmsync", "t1").dest(DEST).scheduled())
            .query(&mut redis.conn())
            .expect("SMEMBERS");
        v.sort();
        v
    };
    let run = Source::Run("r1".into());
    // A push says how many flushes are missing; they count once the caller enqueued them.
    assert_eq!(b.push(&run, false, &page(0, 250)).await.expect("push").schedule, 2);
    assert_eq!(
        b.push(&run, false, &page(250, 5)).await.expect("push").schedule,
        2,
        "not counted yet"
    );
    b.scheduled(&slots(&["a", "b"])).await.expect("count");
    assert_eq!(b.push(&run, false, &page(255, 25)).await.expect("push").schedule, 0);
    assert_eq!(b.push(&run, false, &page(280, 30)).await.expect("push").schedule, 1);
    b.scheduled(&slots(&["c"])).await.expect("count");
    // A scheduled flush starting counts off; then 210 wait, covered by the other two.
    assert_eq!(b.take("s1", 100, 100, Some("a")).await.expect("take").len(), 100);
    assert_eq!(scheduled(), slots(&["b", "c"]));
    assert_eq!(b.push(&run, false, &page(310, 5)).await.expect("push").schedule, 0);
    // A flush that starts before its scheduler counted it is never counted: 115 wait, and
    // the two flushes counted cover them.
    assert_eq!(b.take("s2", 100, 100, Some("d")).await.expect("take").len(), 100);
    b.scheduled(&slots(&["d"])).await.expect("count");
    assert_eq!(scheduled(), slots(&["b", "c"]));
    // Once nothing more is coming, partial batches count too: 115 wait, 2 flushes cover them.
    assert_eq!(b.cover().await.expect("cover"), 0);
    assert_eq!(b.take("s3", 100, 1, Some("b")).await.expect("take").len(), 100);
    assert_eq!(b.take("s4", 100, 1, Some("c")).await.expect("take").len(), 15);
    assert!(scheduled().is_empty());
    assert_eq!(b.push(&run, false, &page(315, 150)).await.expect("push").schedule, 1);
    assert_eq!(
        b.cover().await.expect("cover"),
        2,
        "150 wait: two flushes, none counted"
    );
    // A run counts the distinct emails it mapped.
    let emails: u64 = redis::cmd("SCARD")
        .arg(TenantKeys::new("crmsync", "t1").run_emails("r1"))
        .query(&mut redis.conn())
        .expect("SCARD");
    assert_eq!(emails, 465);
}

/// Every waiting entry stays reachable: whatever order pages with shared emails are pushed in
/// and batches taken (some too small to take, some written), each buffered key is listed in
/// its order list until a flush takes it, and everything is written in the end.
#[tokio::test]
async fn every_waiting_entry_stays_reachable_through_takes_and_takeovers() {
    use rand::{Rng, SeedableRng};
    let redis = RedisServer::start();
    let b = buffer(&redis);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let run = Source::Run("r1".into());
    let mut in_flight: Vec<(String, Vec<Entry>)> = Vec::new();
    let mut flush_n = 0;
    for round in 0..40 {
        // A page of 120 contacts; emails drawn from a small pool, so many are shared.
        let page: Vec<Change> = (0..120)
            .map(|_| {
                let c = rng.random_range(0..2_000);
                upsert(
                    &format!("c{c:04}"),
                    100 + round,
                    &format!("e{}@x.io", rng.random_range(0..600)),
                    "L",
                )
            })
            .collect();
        b.push(&run, false, &page).await.expect("push");
        for _ in 0..rng.random_range(0..3) {
            flush_n += 1;
            let id = format!("f{flush_n}");
            let min = if rng.random_bool(0.5) { 1 } else { 30 };
            // Batches larger than a scan chunk, so busy keys put back are met again.
            let batch = b.take(&id, 150, min, None).await.expect("take");
            if !batch.is_empty() {
                in_flight.push((id, batch));
            }
        }
        // Some batches are written now, others later (they hold their records meanwhile).
        while !in_flight.is_empty() && rng.random_bool(0.6) {
            let (id, batch) = in_flight.remove(rng.random_range(0..in_flight.len()));
            let results: Vec<(&Entry, Written)> =
                batch.iter().map(|e| (e, Written::Record(rid(&e.contact_id)))).collect();
            b.done(&id, &results, &[], &[]).await.expect("done");
        }
        let d = b.keys();
        let waiting: Vec<String> = redis::cmd("HKEYS")
            .arg(d.queue())
            .query(&mut redis.conn())
            .expect("HKEYS");
        let mut listed: Vec<String> = redis::cmd("LRANGE")
            .arg(d.queue_backfill())
            .arg(0)
            .arg(-1)
            .query(&mut redis.conn())
            .expect("LRANGE");
        listed.extend(
            redis::cmd("LRANGE")
                .arg(d.queue_feed())
                .arg(0)
                .arg(-1)
                .query::<Vec<String>>(&mut redis.conn())
                .expect("LRANGE"),
        );
        for k in &waiting {
            assert!(listed.contains(k), "round {round}: {k} waits but is listed nowhere");
        }
    }
    for (id, batch) in in_flight.drain(..) {
        let results: Vec<(&Entry, Written)> = batch.iter().map(|e| (e, Written::Record(rid(&e.contact_id)))).collect();
        b.done(&id, &results, &[], &[]).await.expect("done");
    }
    while !write_all(&b, &format!("last{flush_n}")).await.is_empty() {
        flush_n += 1;
    }
    assert_eq!(b.waiting().await.expect("waiting").entries, 0, "everything was written");
    let buffered: i64 = redis::cmd("GET")
        .arg(TenantKeys::new("crmsync", "t1").run_buffered("r1"))
        .query(&mut redis.conn())
        .expect("GET");
    assert_eq!(buffered, 0, "the run's count of waiting records is back to zero");
}

/// A change-feed flush is named by the window its records arrived in and runs after that
/// window ends: a record pushed later in the same window can never find its window's flush
/// already done (its schedule would be dropped as a duplicate, and the record left waiting).
#[tokio::test]
async fn a_feed_window_flush_runs_after_its_window_ends() {
    let redis = RedisServer::start();
    let conn = crmsync_queue::connect(redis.client(), std::time::Duration::from_secs(5)).expect("conn");
    let writes: crmsync_queue::JobQueue<crmsync_producer::FlushWrites> =
        crmsync_queue::JobQueue::new(conn, crmsync_producer::writes_queue("crmsync"));
    let window = std::time::Duration::from_millis(2_000);
    for _ in 0..3 {
        let before = crmsync_queue::now_ms();
        crmsync_producer::schedule_feed_flush(&writes, "acme", window)
            .await
            .expect("schedule");
        let after = crmsync_queue::now_ms();
        let runs: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg("{crmsync:writes}:delayed")
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query(&mut redis.conn())
            .expect("delayed");
        // The newest schedule's window (the one `after` falls in; a duplicate in the same
        // window adds nothing) ends before its flush runs.
        let window_end = (before / 2_000 + 1) * 2_000;
        let latest = runs.iter().map(|(_, at)| *at as u64).max().expect("a flush");
        assert!(
            latest >= window_end,
            "the flush of window ending {window_end} runs at {latest}"
        );
        assert!(latest <= after + 2_000);
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    }
}

/// Every script's work per call is bounded, not proportional to how many contacts share an
/// email: with 4,000 contacts on one email, each contact leaving it costs the same few Redis
/// commands (counted by Redis itself, scripts' own commands included), and no command reads
/// the whole member list.
#[tokio::test]
async fn leaving_an_email_four_thousand_contacts_share_costs_a_bounded_number_of_commands() {
    let redis = RedisServer::start();
    let b = buffer(&redis);
    let ids: Vec<String> = (0..4_000).map(|i| format!("c{i:05}")).collect();
    for chunk in ids.chunks(200) {
        let changes: Vec<Change> = chunk.iter().map(|c| upsert(c, 10, "shared@x.io", c)).collect();
        b.push(&Source::Feed, false, &changes).await.expect("push");
    }
    // The owner's record is written.
    let mut n = 0;
    while !write_all(&b, &format!("f{n}")).await.is_empty() {
        n += 1;
    }
    let stats = |redis: &RedisServer| -> std::collections::HashMap<String, u64> {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut redis.conn())
            .expect("info");
        info.lines()
            .filter_map(|l| {
                let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = rest.split(',').next()?.strip_prefix("calls=")?.parse().ok()?;
                Some((name.to_owned(), calls))
            })
            .collect()
    };
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut redis.conn())
        .expect("resetstat");
    // 200 contacts (not the owner) leave the shared email, one push each.
    for (i, c) in ids.iter().skip(1).take(200).enumerate() {
        b.push(
            &Source::Feed,
            false,
            &[upsert(c, 20 + i as u64, &format!("own-{c}@x.io"), c)],
        )
        .await
        .expect("push");
    }
    let s = stats(&redis);
    let total: u64 = s
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "evalsha" | "eval" | "script|load" | "config|resetstat"))
        .map(|(_, n)| n)
        .sum();
    assert!(total >= 200, "the pushes ran commands: {s:?}");
    for reads_all in ["smembers", "sort", "hgetall", "lrange"] {
        assert_eq!(s.get(reads_all).copied().unwrap_or(0), 0, "{reads_all} ran: {s:?}");
    }
    assert!(
        total / 200 <= 40,
        "{} commands per leave with 4,000 contacts on the email: {s:?}",
        total / 200
    );
}
