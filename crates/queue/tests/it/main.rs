//! Integration tests of the queue against a real `redis-server` per test. Each test is named
//! after the requirement it pins. Multi-process requirements (SIGKILL crash recovery, worker
//! identity across restarts, SIGTERM drain) are tested with real processes in the workspace's
//! `tests/` package.

mod support;

mod backlog;
mod bad_entries;
mod idempotency;
mod inspection;
mod latency;
mod outages;
mod redrive;
mod retention;
mod retries;
