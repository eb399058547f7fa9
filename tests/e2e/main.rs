//! Multi-process end-to-end tests: real worker processes, real `redis-server`s, real signals.

mod support;

mod backfill;
mod budget;
mod changes;
mod cli;
mod metrics;
mod queue_processes;
mod webhook;
