//! [`RedisStreamBackend`]: the apalis backend. A worker built on it runs four background tasks:
//! - the **fetcher** ([`fetch`]) reads entries with blocking `XREADGROUP` on a dedicated
//!   connection, only as many as the worker has free slots, and hands decoded tasks to apalis;
//! - the **settler** ([`settle`]) records outcomes in batches (one `XACK` script call for a
//!   batch of successes, one script call per retry / deferral / dead letter) and frees slots;
//! - the **maintainer** ([`maintain`]) heartbeats (worker registry and the leases of running
//!   entries), reclaims entries of dead workers, trims finished entries, prunes old workers;
//! - the **promoter** moves due delayed jobs into the stream.
//!
//! apalis's own worker loop polls [`Backend::poll_next`], runs the handler under the tower
//! layers, and calls [`Backend::poll_close`] on shutdown, where unstarted tasks are handed
//! back to the queue and pending outcomes are flushed.

mod fetch;
pub(crate) use maintain::promote_due;
mod maintain;
mod settle;

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use apalis_core::backend::finalize::Ephemeral;
use apalis_core::backend::{Backend, BackendConfig};
use apalis_core::task::Task;
use apalis_core::worker::context::WorkerContext;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::config::QueueConfig;
use crate::conn::{RedisConn, RedisTarget, connect};
use crate::error::QueueError;
use crate::keys::Keys;
use crate::layer::{JobInfo, SettleLayer};
pub(crate) use settle::{SettleMsg, Settlement};

/// What the worker knows about an entry it holds: enough to hand it back unchanged.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    /// Attempts used before this delivery.
    pub attempts_before: u32,
    pub last_error: Option<String>,
    pub last_code: Option<String>,
}

/// State shared by a backend, its background tasks, its settle layer and its handle.
pub(crate) struct Inner {
    pub cfg: QueueConfig,
    pub keys: Keys,
    pub target: RedisTarget,
    pub conn: RedisConn,
    pub consumer: OnceLock<String>,
    /// Entries delivered to this worker and not yet settled, by stream id.
    pub held: Mutex<HashMap<String, Held>>,
    /// One permit per free job slot; the fetcher reads only as many entries as it holds.
    pub slots: Semaphore,
    pub settle_tx: mpsc::UnboundedSender<SettleMsg>,
    /// Stops the fetcher (first step of a shutdown).
    pub stop_fetching: CancellationToken,
    /// Stops the maintainer and the promoter (last step of a shutdown).
    pub stop_all: CancellationToken,
}

impl Inner {
    pub fn consumer(&self) -> &str {
        self.consumer.get().map(String::as_str).unwrap_or("")
    }

    pub fn held_ids(&self) -> Vec<String> {
        self.held
            .lock()
            .map(|h| h.keys().cloned().collect())
            .unwrap_or_default()
    }
}

/// A handle on a running backend, kept by the process runtime to hand back the jobs still
/// running when the drain deadline passes.
#[derive(Clone)]
pub struct BackendHandle {
    inner: Arc<Inner>,
}

impl BackendHandle {
    /// The worker (consumer) name, once the worker has started.
    pub fn worker_name(&self) -> Option<&str> {
        self.inner.consumer.get().map(String::as_str)
    }

    /// Hands every entry this worker still holds back to the queue at once, without using
    /// an attempt (the job was interrupted by a shutdown, not failed), so other workers pick
    /// it up now instead of after the visibility timeout. Returns how many were handed back.
    pub async fn release_held(&self) -> usize {
        let held: Vec<(String, Held)> = self
            .inner
            .held
            .lock()
            .map(|h| h.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let mut released = 0;
        for (entry_id, h) in held {
            let outcome = Settlement::Requeue {
                run_at_ms: 0,
                attempts: h.attempts_before,
                error: h.last_error,
                code: h.last_code,
                counter: "released",
            };
            match settle::settle_one(&self.inner, &entry_id, &outcome).await {
                Ok(true) => released += 1,
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%error, entry = %entry_id, "Could not hand a job back")
                }
            }
        }
        maintain::mark_stopped(&self.inner).await;
        released
    }
}

/// The apalis backend over a Redis stream. Build one per worker:
///
/// ```no_run
/// # use crmsync_queue::{QueueConfig, RedisStreamBackend, worker_identity};
/// # use apalis_core::worker::builder::WorkerBuilder;
/// # async fn job(n: u32) -> Result<(), crmsync_queue::JobError> { Ok(()) }
/// # fn demo(client: redis::Client) -> Result<(), crmsync_queue::QueueError> {
/// let backend = RedisStreamBackend::<u32>::new(client, QueueConfig::new("numbers"))?;
/// let worker = WorkerBuilder::new(worker_identity("numbers")).backend(backend).build(job);
/// # Ok(()) }
/// ```
pub struct RedisStreamBackend<Args> {
    inner: Arc<Inner>,
    settle_rx: Option<mpsc::UnboundedReceiver<SettleMsg>>,
    task_rx: Option<mpsc::UnboundedReceiver<Task<Args>>>,
    fetcher: Option<tokio::task::JoinHandle<()>>,
    started: bool,
    closing: Option<BoxFuture<'static, ()>>,
    _args: PhantomData<fn() -> Args>,
}

impl<Args> std::fmt::Debug for RedisStreamBackend<Args> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStreamBackend")
            .field("queue", &self.inner.cfg.name)
            .field("consumer", &self.inner.consumer())
            .finish()
    }
}

impl<Args> RedisStreamBackend<Args>
where
    Args: DeserializeOwned + Send + Sync + 'static,
{
    /// A backend with its own shared connection (opened lazily: the worker starts even while
    /// Redis is down).
    pub fn new(target: impl Into<RedisTarget>, cfg: QueueConfig) -> Result<Self, QueueError> {
        let target = target.into();
        let conn = connect(&target, cfg.response_timeout)?;
        Ok(Self::with_connection(target, conn, cfg))
    }

    /// A backend sharing an existing connection for its non-blocking calls.
    pub fn with_connection(target: impl Into<RedisTarget>, conn: RedisConn, cfg: QueueConfig) -> Self {
        let target = target.into();
        let (settle_tx, settle_rx) = mpsc::unbounded_channel();
        let keys = Keys::new(&cfg.namespace, &cfg.name);
        let inner = Arc::new(Inner {
            slots: Semaphore::new(cfg.concurrency),
            keys,
            target,
            conn,
            consumer: OnceLock::new(),
            held: Mutex::new(HashMap::new()),
            settle_tx,
            stop_fetching: CancellationToken::new(),
            stop_all: CancellationToken::new(),
            cfg,
        });
        Self {
            inner,
            settle_rx: Some(settle_rx),
            task_rx: None,
            fetcher: None,
            started: false,
            closing: None,
            _args: PhantomData,
        }
    }

    /// A handle for the process runtime (see [`crate::runtime`]).
    pub fn handle(&self) -> BackendHandle {
        BackendHandle {
            inner: self.inner.clone(),
        }
    }

    fn start(&mut self, worker: &WorkerContext) {
        self.started = true;
        let _ = self.inner.consumer.set(worker.name().to_owned());
        let (task_tx, task_rx) = mpsc::unbounded_channel();
        self.task_rx = Some(task_rx);
        info!(
            queue = %self.inner.cfg.name,
            worker = %worker.name(),
            concurrency = self.inner.cfg.concurrency,
            "Worker starting"
        );
        if let Some(rx) = self.settle_rx.take() {
            tokio::spawn(settle::run(self.inner.clone(), rx));
        }
        tokio::spawn(maintain::run(self.inner.clone()));
        tokio::spawn(maintain::promote_loop(self.inner.clone()));
        self.fetcher = Some(tokio::spawn(fetch::run::<Args>(
            self.inner.clone(),
            task_tx,
            worker.clone(),
        )));
    }

    fn close_future(&mut self) -> BoxFuture<'static, ()> {
        let inner = self.inner.clone();
        let fetcher = self.fetcher.take();
        let task_rx = self.task_rx.take();
        async move {
            inner.stop_fetching.cancel();
            if let Some(f) = fetcher {
                let _ = f.await;
            }
            // Tasks fetched but never started go back to the queue as they were.
            if let Some(mut rx) = task_rx {
                rx.close();
                let mut handed_back = 0;
                while let Some(task) = rx.recv().await {
                    if let Some(info) = task.ctx().data().get::<JobInfo>() {
                        let _ = inner.settle_tx.send(SettleMsg::Settle {
                            entry_id: info.entry_id.clone(),
                            outcome: Settlement::Requeue {
                                run_at_ms: 0,
                                attempts: info.attempt.saturating_sub(1),
                                error: info.last_error.clone(),
                                code: info.last_code.clone(),
                                counter: "released",
                            },
                            done: None,
                        });
                        handed_back += 1;
                    }
                }
                if handed_back > 0 {
                    debug!(handed_back, "Unstarted jobs handed back");
                }
            }
            let (tx, rx) = oneshot::channel();
            if inner.settle_tx.send(SettleMsg::Flush(tx)).is_ok() {
                let _ = rx.await;
            }
            maintain::mark_stopped(&inner).await;
            inner.stop_all.cancel();
            info!(queue = %inner.cfg.name, worker = %inner.consumer(), "Worker stopped");
        }
        .boxed()
    }
}

impl<Args> Backend for RedisStreamBackend<Args>
where
    Args: DeserializeOwned + Send + Sync + 'static,
{
    type Task = Task<Args>;
    type Error = QueueError;

    fn poll_ready(&mut self, _cx: &mut Context<'_>, worker: &WorkerContext) -> Poll<Result<(), Self::Error>> {
        if !self.started {
            self.start(worker);
        }
        Poll::Ready(Ok(()))
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, Self::Error>>> {
        if !self.started {
            self.start(worker);
        }
        match self.task_rx.as_mut() {
            Some(rx) => rx.poll_recv(cx).map(|t| t.map(Ok)),
            None => Poll::Ready(None),
        }
    }

    fn poll_close(&mut self, cx: &mut Context<'_>, _worker: &WorkerContext) -> Poll<Result<(), Self::Error>> {
        if !self.started {
            return Poll::Ready(Ok(()));
        }
        if self.closing.is_none() {
            self.closing = Some(self.close_future());
        }
        match self.closing.as_mut() {
            Some(f) => f.poll_unpin(cx).map(Ok),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl<Args> BackendConfig for RedisStreamBackend<Args> {
    type Args = Args;
    type Id = String;
    type Kind = Ephemeral;
    type Config = QueueConfig;
    type Layer = SettleLayer;

    fn config(&self) -> &Self::Config {
        &self.inner.cfg
    }

    fn middleware(&mut self, _worker: &mut WorkerContext) -> Self::Layer {
        SettleLayer::new(self.inner.settle_tx.clone(), self.inner.cfg.name.clone())
    }
}

impl<Args> Drop for RedisStreamBackend<Args> {
    fn drop(&mut self) {
        // A backend dropped without a clean close (a drain deadline, an aborted runtime) must
        // not leave its background tasks heartbeating for jobs nobody runs any more.
        self.inner.stop_fetching.cancel();
        self.inner.stop_all.cancel();
    }
}
