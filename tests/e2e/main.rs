//! Multi-process end-to-end tests: real worker processes, real `redis-server`s, real signals.

mod support;

mod backfill;
mod budget;
mod changes;
mod chaos;
mod cli;
mod cli_ux;
mod cluster;
mod dead;
mod lifecycle;
mod metrics;
mod queue_processes;
mod reconcile;
mod rolling;
mod salesforce;
mod webhook;
