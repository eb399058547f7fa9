//! The write buffer's scripts against a real Redis: how changes collapse, order, share
//! emails and move records, as a flush would see them.

use std::time::Duration;

use crmsync_domain::ZohoContact;
use crmsync_producer::{Change, Op, Source, WriteBuffer};
use crmsync_testkit::RedisServer;

fn buffer(redis: &RedisServer) -> WriteBuffer {
    let conn = crmsync_queue::connect(redis.client(), Duration::from_secs(5)).expect("conn");
    WriteBuffer::new(conn, "crmsync", "t1")
}

fn record(email: &str, last: &str) -> ZohoContact {
    ZohoContact {
        first_name: None,
        last_name: last.into(),
        email: email.into(),
        phone: None,
        account_name: None,
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

/// Writes a taken batch as a flush would, remembering each record as written.
async fn write_all(b: &WriteBuffer, flush: &str) -> Vec<(String, Op)> {
    let batch = b.take(flush, 100, 1).await.expect("take");
    let hashes: Vec<(String, String, String)> = batch
        .iter()
        .filter_map(|e| match &e.op {
            Op::Upsert(r) | Op::Move { record: r, .. } => Some((e.contact_id.clone(), e.hash.clone(), r.email.clone())),
            Op::Delete { .. } => None,
        })
        .collect();
    let written: Vec<(&str, Option<(&str, &str)>)> = hashes
        .iter()
        .map(|(c, h, e)| (c.as_str(), Some((h.as_str(), e.as_str()))))
        .collect();
    b.set_written(&written).await.expect("written");
    b.done(flush, "unused-active-run", &[]).await.expect("done");
    batch.into_iter().map(|e| (e.contact_id, e.op)).collect()
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
    let batch = write_all(&b, "f1").await;
    assert_eq!(batch, vec![("c1".to_owned(), Op::Upsert(record("a@x.io", "Two")))]);
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
        vec![("c1".to_owned(), Op::Upsert(record("a@x.io", "Fresh")))]
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
    // Deleted before the move ran: the record still sits under the old email.
    b.push(&Source::Feed, false, &[delete("c1", 12)]).await.expect("push");
    let batch = write_all(&b, "f2").await;
    assert_eq!(
        batch,
        vec![(
            "c1".to_owned(),
            Op::Delete {
                email: "old@x.io".into()
            }
        )]
    );

    b.push(&Source::Feed, false, &[upsert("c2", 20, "p@x.io", "L")])
        .await
        .expect("push");
    write_all(&b, "f3").await;
    b.push(&Source::Feed, false, &[upsert("c2", 21, "q@x.io", "L")])
        .await
        .expect("push");
    let batch = write_all(&b, "f4").await;
    assert_eq!(
        batch,
        vec![(
            "c2".to_owned(),
            Op::Move {
                from: "p@x.io".into(),
                record: record("q@x.io", "L")
            }
        )]
    );
    assert_eq!(
        b.written_emails(&["c2"]).await.expect("written"),
        vec![Some("q@x.io".to_owned())]
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
    assert_eq!(
        write_all(&b, "f2").await,
        vec![("a".to_owned(), Op::Upsert(record("s@x.io", "Anna")))]
    );
    // The owner leaves: the next smallest is re-read, and its fields are written even though
    // they hash as what it wrote before (the record holds Anna's now).
    b.push(&Source::Feed, false, &[delete("a", 13)]).await.expect("push");
    assert_eq!(b.take_refresh(10).await.expect("refresh"), vec!["m".to_owned()]);
    let p = b
        .push(&Source::Feed, true, &[upsert("m", 13, "s@x.io", "Mike")])
        .await
        .expect("push");
    assert_eq!(p.pushed, 1);
    assert_eq!(
        write_all(&b, "f3").await,
        vec![("m".to_owned(), Op::Upsert(record("s@x.io", "Mike")))]
    );
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
async fn writes_to_one_email_never_overlap_between_flushes() {
    let redis = RedisServer::start();
    let b = buffer(&redis);
    b.push(&Source::Feed, false, &[upsert("m", 10, "s@x.io", "Mike")])
        .await
        .expect("push");
    let first = b.take("f1", 100, 1).await.expect("take");
    assert_eq!(first.len(), 1);
    // While f1 writes it, another contact takes the email over: that write waits for f1.
    b.push(&Source::Feed, false, &[upsert("a", 11, "s@x.io", "Anna")])
        .await
        .expect("push");
    b.push(&Source::Feed, false, &[upsert("k", 11, "k@x.io", "Kim")])
        .await
        .expect("push");
    let second = b.take("f2", 100, 1).await.expect("take");
    assert_eq!(
        second.iter().map(|e| e.contact_id.as_str()).collect::<Vec<_>>(),
        vec!["k"]
    );
    b.done("f2", "unused", &[]).await.expect("done");
    b.done("f1", "unused", &[]).await.expect("done");
    let third = b.take("f3", 100, 1).await.expect("take");
    assert_eq!(
        third.iter().map(|e| e.contact_id.as_str()).collect::<Vec<_>>(),
        vec!["a"]
    );
    // A flush that runs again resumes its own batch, and one that is done finds nothing.
    assert_eq!(b.take("f3", 100, 1).await.expect("take"), third);
    b.done("f3", "unused", &[]).await.expect("done");
    assert!(b.take("f3", 100, 1).await.expect("take").is_empty());
}
