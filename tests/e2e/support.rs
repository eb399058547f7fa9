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
    let conn = crmsync_queue::connect(redis.client(), Duration::from_secs(5)).expect("connection");
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

/// A Redis the `crmsync` processes of a test use: one server or a cluster.
pub trait TestRedis {
    fn redis_url(&self) -> String;
}

impl TestRedis for RedisServer {
    fn redis_url(&self) -> String {
        self.url()
    }
}

impl TestRedis for crmsync_testkit::RedisCluster {
    fn redis_url(&self) -> String {
        self.url()
    }
}

/// A `crmsync` command against this Redis, with a secret key.
pub fn crmsync(redis: &impl TestRedis, key: &str) -> Command {
    let mut cmd = Command::new(bin_path("crmsync"));
    cmd.env("CRMSYNC_REDIS_URL", redis.redis_url())
        .env("CRMSYNC_SECRET_KEY", key)
        .env("CRMSYNC_LOG", "info")
        .env_remove("CRMSYNC_NAMESPACE");
    cmd
}

/// Runs a `crmsync` command to completion; returns (exit code, stdout, stderr).
pub fn crmsync_output(redis: &impl TestRedis, key: &str, args: &[&str]) -> (i32, String, String) {
    let out = crmsync(redis, key).args(args).output().expect("run crmsync");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Registers a simulator tenant with `crmsync tenant add`.
pub fn add_sim_tenant(redis: &impl TestRedis, key: &str, sim: &crmsync_sim::RunningSim, t: &crmsync_sim::TenantConfig) {
    add_sim_tenant_with(redis, key, sim, t, &[]);
}

/// [`add_sim_tenant`] with extra `tenant add` flags.
pub fn add_sim_tenant_with(
    redis: &impl TestRedis,
    key: &str,
    sim: &crmsync_sim::RunningSim,
    t: &crmsync_sim::TenantConfig,
    extra: &[&str],
) {
    let mut args = crmsync_e2e::sim_tenant_add_args(sim, t);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = crmsync_output(redis, key, &args);
    assert_eq!(code, 0, "tenant add failed: {out} {err}");
}

/// A simulator of `tenants` that delivers their signed webhooks (secret `secret`) to a
/// receiver on `127.0.0.1:<hook_port>`.
pub async fn webhook_sim(
    seed: u64,
    tenants: Vec<crmsync_sim::TenantConfig>,
    hook_port: u16,
    secret: &str,
) -> crmsync_sim::RunningSim {
    crmsync_sim::RunningSim::start(
        crmsync_sim::SimConfig {
            seed,
            tenants,
            webhooks: Some(crmsync_sim::WebhookConfig::new(
                format!("http://127.0.0.1:{hook_port}/webhooks/nylas"),
                secret,
            )),
            ..crmsync_sim::SimConfig::default()
        },
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("sim")
}

/// A `crmsync worker` process.
pub fn crmsync_worker(redis: &impl TestRedis, key: &str, name: &str, extra: &[&str]) -> ChildProcess {
    let mut cmd = crmsync(redis, key);
    cmd.arg("worker").args(extra);
    ChildProcess::spawn(name, cmd)
}

/// A `crmsync webhook` process on a free port; returns it with its base URL once it answers.
pub async fn webhook_server(redis: &impl TestRedis, key: &str, extra: &[&str]) -> (ChildProcess, String) {
    webhook_server_on(redis, key, crmsync_testkit::free_port(), extra).await
}

/// A `crmsync webhook` process on `port`.
pub async fn webhook_server_on(redis: &impl TestRedis, key: &str, port: u16, extra: &[&str]) -> (ChildProcess, String) {
    let mut cmd = crmsync(redis, key);
    cmd.arg("webhook")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .args(extra);
    let proc = ChildProcess::spawn("webhook", cmd);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    crmsync_testkit::eventually(Duration::from_secs(15), "the webhook server to answer", || async {
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success())
    })
    .await;
    (proc, base)
}
