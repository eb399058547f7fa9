//! Tenants: who to read (a Nylas grant) and where to write (a Zoho org), stored in Redis so
//! every worker and the CLI share them. Secrets (the Nylas API key, the Zoho client secret and
//! refresh token, webhook secrets) are sealed with XChaCha20-Poly1305 under a key the operator
//! provides (`CRMSYNC_SECRET_KEY`, or a key file), never stored in plain text, never printed:
//! [`Secret`]'s `Debug` says `<redacted>` and it has no `Display`.
//!
//! Keys: `crmsync:tenants` (set of tenant ids) and, per tenant, `{crmsync:t:<id>}:tenant`
//! (JSON of [`Tenant`] with sealed secrets). The `{crmsync:t:<id>}` hash tag groups every
//! per-tenant key (tokens, runs, ledgers) in one Redis Cluster slot.

mod secret;
mod store;
mod tenant;

pub use secret::{KEY_ENV, KEY_FILE_ENV, Secret, SecretError, SecretKey};
pub use store::{StoreError, TenantStore};
pub use tenant::{
    DEFAULT_CONCURRENCY, DEFAULT_RPS, Edition, NylasSettings, Tenant, TenantError, ZohoSettings, tenant_tag,
    validate_id,
};
