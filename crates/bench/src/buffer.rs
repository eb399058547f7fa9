//! The write buffer alone, against its own Redis: what each script costs Redis per contact
//! (CPU from `INFO cpu` around each phase), for a backfill-shaped load: pages of 200 contacts
//! pushed (a sixth sharing emails), batches of 100 taken and recorded as written; then the same
//! book pushed again unchanged.

use std::time::Duration;

use crmsync_domain::{CrmRecord, MatchKey};
use crmsync_producer::{Change, Entry, Source, WriteBuffer, Written};
use crmsync_tenants::TenantKeys;
use crmsync_testkit::RedisServer;

use crate::backfill::{redis_cpu_secs, redis_used_memory};

#[derive(clap::Args)]
pub struct BufferBench {
    /// Contacts in the book.
    #[arg(long, default_value_t = 20_000)]
    contacts: usize,
}

fn change(i: usize, at_s: u64) -> Change {
    // Every sixth contact shares the email of the one before it.
    let email = if i % 6 == 5 { i - 1 } else { i };
    Change::Upsert {
        contact_id: format!("c{:024}", i * 7919 % 1_000_003),
        at_ms: at_s * 1000,
        record: CrmRecord {
            first_name: Some(format!("First{i}")),
            last_name: format!("Last{i}"),
            email: format!("person{email}@example.com"),
            phone: Some(format!("+1555{i:07}")),
            company: Some("Acme Corporation".into()),
            title: Some("Engineer".into()),
        },
    }
}

pub async fn run(b: BufferBench) -> anyhow::Result<()> {
    let redis = RedisServer::start();
    let conn = crmsync_queue::connect(redis.client(), Duration::from_secs(10))?;
    let dest = "0123456789ab";
    let _: () = redis::cmd("SET")
        .arg(TenantKeys::new("crmsync", "bench").live())
        .arg(dest)
        .query(&mut redis.conn())?;
    let buffer = WriteBuffer::new(conn, "crmsync", "bench", dest, MatchKey::Email, 100);
    let now_s = crmsync_queue::now_ms() / 1000;
    let mem0 = redis_used_memory(&redis)?;
    let mut rows = Vec::new();
    for (round, force) in [(0u64, false), (1, false)] {
        let run = Source::Run(format!("r{round}"));
        let changes: Vec<Change> = (0..b.contacts).map(|i| change(i, now_s + round)).collect();
        let cpu = redis_cpu_secs(&redis)?;
        let mut pushed = 0;
        for page in changes.chunks(200) {
            pushed += buffer.push(&run, force, page).await?.pushed;
        }
        let push_cpu = redis_cpu_secs(&redis)? - cpu;
        let (mut take_cpu, mut done_cpu, mut batches) = (0.0, 0.0, 0);
        loop {
            let t = redis_cpu_secs(&redis)?;
            let batch = buffer.take(&format!("f{round}-{batches}"), 100, 1, None).await?;
            take_cpu += redis_cpu_secs(&redis)? - t;
            if batch.is_empty() {
                break;
            }
            let results: Vec<(&Entry, Written)> = batch
                .iter()
                .map(|e| (e, Written::Record(format!("36523970000{batches:08}"))))
                .collect();
            let t = redis_cpu_secs(&redis)?;
            buffer.done(&format!("f{round}-{batches}"), &results, &[], &[]).await?;
            done_cpu += redis_cpu_secs(&redis)? - t;
            batches += 1;
        }
        let per_k = |s: f64| s * 1e6 / b.contacts as f64;
        rows.push(format!(
            "| {} | {pushed} | {batches} | {:.1} | {:.1} | {:.1} | {:.1} |",
            if round == 0 {
                "first backfill"
            } else {
                "unchanged re-run"
            },
            per_k(push_cpu),
            per_k(take_cpu),
            per_k(done_cpu),
            per_k(push_cpu + take_cpu + done_cpu)
        ));
    }
    // A run's email set is temporary (deleted when its run completes): not state.
    for round in 0..2 {
        let _: () = redis::cmd("DEL")
            .arg(TenantKeys::new("crmsync", "bench").run_emails(&format!("r{round}")))
            .query(&mut redis.conn())?;
    }
    let mem = redis_used_memory(&redis)?.saturating_sub(mem0);
    println!(
        "## Write buffer alone: {} contacts in pages of 200, batches of 100 (Redis CPU, ms per 1,000 contacts)\n",
        b.contacts
    );
    println!("| pass | entries pushed | batches | push | take | done | all |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!("{r}");
    }
    println!(
        "\nState left: {:.0} B per contact (used_memory delta; the CPU figures include the bench's own INFO calls).\n",
        mem as f64 / b.contacts as f64
    );
    Ok(())
}
