//! Where a tenant's state is, for actions that need no secret: its destination's keys and its
//! CRM, from its stored settings.

use crmsync_producer::WriteBuffer;
use crmsync_queue::RedisConn;
use crmsync_tenants::{CrmKind, DestKeys, TenantKeys, TenantStore};

use crate::OpsError;

/// A tenant's current destination.
pub struct Site {
    pub tenant: String,
    pub keys: DestKeys,
    pub kind: CrmKind,
    /// The tenant's public view (secrets masked or sealed).
    pub view: serde_json::Value,
}

impl Site {
    /// Reads the tenant's settings; [`OpsError::NotFound`] when it does not exist.
    pub async fn of(conn: &RedisConn, namespace: &str, tenant: &str) -> Result<Site, OpsError> {
        let view = TenantStore::new(conn.clone(), namespace, None).view(tenant).await?;
        let dest = view["dest"].as_str().unwrap_or_default().to_owned();
        let kind = view["crm"]["kind"]
            .as_str()
            .and_then(CrmKind::parse)
            .unwrap_or(CrmKind::Zoho);
        Ok(Site {
            tenant: tenant.to_owned(),
            keys: TenantKeys::new(namespace, tenant).dest(&dest),
            kind,
            view,
        })
    }

    /// The destination's write buffer.
    pub fn buffer(&self, conn: &RedisConn, namespace: &str) -> WriteBuffer {
        let p = crmsync_sink::profile(self.kind);
        WriteBuffer::new(
            conn.clone(),
            namespace,
            &self.tenant,
            self.keys.dest(),
            p.match_key,
            p.max_take,
        )
    }
}
