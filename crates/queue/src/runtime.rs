//! Running a worker process: apalis's [`Monitor`] until SIGTERM or SIGINT, then a graceful
//! drain with a deadline.
//!
//! On the signal every worker stops fetching, hands its fetched-but-unstarted jobs back and
//! lets its running jobs finish. Jobs still running when the deadline passes are handed back
//! at once (without using an attempt: they were interrupted, not failed), so other workers
//! take them now rather than after the visibility timeout.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apalis_core::monitor::{Monitor, MonitorError};
use tracing::{info, warn};

use crate::backend::BackendHandle;

/// How a drain ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// The deadline passed with jobs still running.
    pub timed_out: bool,
    /// Jobs handed back to the queue at the deadline.
    pub released: usize,
}

/// The backends of the workers a process runs, collected as the monitor builds them (it may
/// build a worker again after a restart).
#[derive(Clone, Default)]
pub struct Handles(Arc<Mutex<Vec<BackendHandle>>>);

impl Handles {
    pub fn push(&self, h: BackendHandle) {
        if let Ok(mut v) = self.0.lock() {
            v.push(h);
        }
    }

    fn all(&self) -> Vec<BackendHandle> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}

/// Runs `monitor` until `signal` resolves, then drains within `drain`.
pub async fn run_until<S>(
    monitor: Monitor,
    handles: &Handles,
    signal: S,
    drain: Duration,
) -> Result<DrainReport, MonitorError>
where
    S: Future<Output = std::io::Result<()>>,
{
    let ctx = monitor.context();
    let run = monitor.run();
    tokio::pin!(run);
    tokio::select! {
        res = &mut run => return res.map(|_| DrainReport::default()),
        sig = signal => {
            if let Err(error) = sig {
                warn!(%error, "Waiting for a shutdown signal failed; shutting down");
            }
        }
    }
    info!(
        drain_secs = drain.as_secs_f64(),
        "Shutdown requested: finishing running jobs"
    );
    let _ = ctx.shutdown();
    match tokio::time::timeout(drain, &mut run).await {
        Ok(res) => res.map(|_| DrainReport::default()),
        Err(_) => {
            let mut released = 0;
            for h in handles.all() {
                released += h.release_held().await;
            }
            warn!(released, "Drain deadline passed; running jobs handed back to the queue");
            Ok(DrainReport {
                timed_out: true,
                released,
            })
        }
    }
}
