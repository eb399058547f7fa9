//! Maintenance jobs: deleting the state of a destination a tenant no longer writes to, in
//! bounded steps, in the background.

use crmsync_producer::Maintenance;
use crmsync_queue::JobError;
use crmsync_tenants::TenantKeys;
use tracing::info;

use crate::context::Context;
use crate::errors;

/// Keys deleted per `UNLINK` (and scanned per `SCAN` step).
const PURGE_BATCH: usize = 500;

pub async fn run_maintenance(ctx: &Context, job: Maintenance) -> Result<(), JobError> {
    match job {
        Maintenance::PurgeDestination { tenant, dest } => {
            let keys = TenantKeys::new(&ctx.opts.namespace, &tenant);
            let mut conn = ctx.conn.clone();
            let live: Option<String> = redis::cmd("GET")
                .arg(keys.live())
                .query_async(&mut conn)
                .await
                .map_err(errors::redis)?;
            if live.as_deref() == Some(dest.as_str()) {
                // The tenant writes there (again): nothing to delete.
                return Ok(());
            }
            let prefix = format!("{}:", keys.dest(&dest).prefix());
            let report = crmsync_redis::purge_matching(&ctx.conn, &prefix, PURGE_BATCH)
                .await
                .map_err(errors::redis)?;
            info!(%tenant, %dest, deleted = report.deleted, scans = report.scans, "Deleted the state of a destination the tenant left");
            Ok(())
        }
    }
}
