//! Spawning probe workers and reading what they recorded.

use std::process::Command;
use std::time::Duration;

use crmsync_e2e::{DONE, PROBE_QUEUE, ProbeJob, Record, STARTS};
use crmsync_queue::{JobQueue, QueueConfig};
use crmsync_testkit::{ChildProcess, RedisServer, bin_path};

pub fn probe_worker(redis: &RedisServer, concurrency: usize, vt_ms: u64, drain_ms: u64) -> ChildProcess {
    let mut cmd = Command::new(bin_path("crmsync-probe-worker"));
    cmd.arg("--redis")
        .arg(redis.url())
        .arg("--concurrency")
        .arg(concurrency.to_string())
        .arg("--vt-ms")
        .arg(vt_ms.to_string())
        .arg("--drain-ms")
        .arg(drain_ms.to_string());
    ChildProcess::spawn("probe-worker", cmd)
}

pub fn probe_queue(redis: &RedisServer) -> JobQueue<ProbeJob> {
    let conn = crmsync_queue::connect(&redis.client(), Duration::from_secs(5)).expect("connection");
    JobQueue::new(conn, QueueConfig::new(PROBE_QUEUE))
}

fn records(redis: &RedisServer, key: &str) -> Vec<Record> {
    let raw: Vec<String> = redis::cmd("LRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .query(&mut redis.conn())
        .expect("LRANGE");
    raw.iter().filter_map(|r| Record::parse(r)).collect()
}

pub fn starts(redis: &RedisServer) -> Vec<Record> {
    records(redis, STARTS)
}

pub fn done(redis: &RedisServer) -> Vec<Record> {
    records(redis, DONE)
}
