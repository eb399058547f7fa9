//! Shared test setup: a Redis per test, queue configs with short timings, in-process workers.

use std::future::Future;
use std::time::Duration;

use apalis_core::error::BoxDynError;
use apalis_core::worker::builder::WorkerBuilder;
use crmsync_queue::{BackendHandle, JobInfo, JobQueue, QueueConfig, RedisStreamBackend, worker_identity};
use crmsync_testkit::RedisServer;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

/// A queue config with timings short enough for tests.
pub fn config(name: &str) -> QueueConfig {
    let mut cfg = QueueConfig::new(name)
        .visibility_timeout(Duration::from_secs(3))
        .concurrency(32);
    cfg.promote_interval = Duration::from_millis(50);
    cfg
}

pub fn queue<Args: Serialize>(redis: &RedisServer, cfg: &QueueConfig) -> JobQueue<Args> {
    let conn = crmsync_queue::connect(redis.client(), Duration::from_secs(5)).expect("connection manager");
    JobQueue::new(conn, cfg.clone())
}

/// An in-process worker running on its own task.
pub struct TestWorker {
    stop: Option<oneshot::Sender<()>>,
    join: tokio::task::JoinHandle<Result<(), apalis_core::error::WorkerError>>,
    pub handle: BackendHandle,
}

impl TestWorker {
    /// Asks the worker to shut down gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let res = tokio::time::timeout(Duration::from_secs(30), &mut self.join)
            .await
            .expect("worker stops within 30 s")
            .expect("worker task did not panic");
        res.expect("worker ended without error");
    }

    pub fn is_running(&self) -> bool {
        !self.join.is_finished()
    }
}

/// Starts a worker running `handler` for every job.
pub fn start_worker<Args, F, Fut, E>(redis: &RedisServer, cfg: &QueueConfig, handler: F) -> TestWorker
where
    Args: DeserializeOwned + Send + Sync + 'static,
    F: Fn(Args, JobInfo) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Into<BoxDynError> + Send + 'static,
{
    let backend = RedisStreamBackend::<Args>::new(redis.client(), cfg.clone()).expect("backend");
    let handle = backend.handle();
    let worker = WorkerBuilder::new(worker_identity("test"))
        .backend(backend)
        .build(handler);
    let (tx, rx) = oneshot::channel::<()>();
    let join = tokio::spawn(worker.run_until(async move {
        let _ = rx.await;
        Ok::<(), std::io::Error>(())
    }));
    TestWorker {
        stop: Some(tx),
        join,
        handle,
    }
}

/// `INFO commandstats` call count of one command.
pub fn command_calls(conn: &mut redis::Connection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(conn).expect("INFO");
    let prefix = format!("cmdstat_{}:calls=", command.to_lowercase());
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}
