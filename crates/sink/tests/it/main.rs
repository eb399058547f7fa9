//! The sinks against the simulator, with their token caches on a real Redis.

mod fixtures;
mod salesforce;
mod zoho;
