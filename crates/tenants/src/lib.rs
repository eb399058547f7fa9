//! Tenants: who to read (a Nylas grant) and where to write (a CRM connection, [`Crm`]), stored
//! in Redis so every worker and the CLI share them. Secrets (the Nylas API key, the CRM's
//! client secret and refresh token, webhook secrets) are sealed with XChaCha20-Poly1305 under a
//! key the operator provides (`CRMSYNC_SECRET_KEY`, or a key file), never stored in plain text,
//! never printed: [`Secret`]'s `Debug` says `<redacted>` and it has no `Display`.
//!
//! Keys: `crmsync:tenants` (set of tenant ids), `crmsync:grants` (grant -> tenant) and, per
//! tenant, `{crmsync:t:<id>}:tenant` (JSON of [`Tenant`] with sealed secrets) and
//! `{crmsync:t:<id>}:live` (the destination id, the anchor every state-writing script checks).
//! The `{crmsync:t:<id>}` hash tag groups every per-tenant key in one Redis Cluster slot.
//!
//! **Boundary:** no CRM client here: a connection is plain data, used by `crmsync-sink`.

pub mod crm;
mod keys;
mod secret;
mod store;
mod tenant;

pub use crm::{Crm, CrmKind, Routing, SalesforceConnection, ZohoConnection};
pub use keys::{DestKeys, LIVE_GUARD, TenantKeys, is_gone};
pub use secret::{KEY_ENV, KEY_FILE_ENV, Sealer, Secret, SecretError, SecretKey};
pub use store::{Removed, StoreError, TenantStore, UpdateOptions, Updated};
pub use tenant::{
    DEFAULT_CONCURRENCY, DEFAULT_RPS, Edition, NylasSettings, Tenant, TenantError, new_dest_id, tenant_tag, validate_id,
};
