//! `crmsync keys rotate`: re-seal every tenant's secrets with a new key.
//!
//! The procedure (also in the README):
//! 1. `crmsync keygen` → the new key;
//! 2. deploy every process with `CRMSYNC_SECRET_KEY=<new>` and `CRMSYNC_SECRET_KEY_OLD=<old>`:
//!    they read with both and seal with the new one;
//! 3. `crmsync keys rotate` (same environment) re-seals every tenant, a batch at a time;
//! 4. deploy without `CRMSYNC_SECRET_KEY_OLD`: the old key is retired.

use clap::Subcommand;
use crmsync_redis::num::{out_of, thousands};
use crmsync_tenants::{SecretKey, TenantStore};

use crate::Env;

#[derive(Subcommand)]
pub enum KeysCmd {
    /// Re-seal every tenant's secrets with CRMSYNC_SECRET_KEY, opening them with it or a key of
    /// CRMSYNC_SECRET_KEY_OLD; tenants already sealed with the new key are left as they are.
    #[command(after_help = crate::SECRET_KEY_HELP)]
    Rotate {
        /// Tenants re-sealed between progress lines.
        #[arg(long, default_value_t = 100)]
        batch: usize,
    },
}

pub async fn run(env: &Env, cmd: KeysCmd) -> anyhow::Result<()> {
    match cmd {
        KeysCmd::Rotate { batch } => {
            let key = SecretKey::from_env()?;
            let store = TenantStore::new(env.conn()?, &env.namespace, Some(key.clone()));
            store.check_key().await.map_err(|e| {
                anyhow::anyhow!(
                    "{e}; set CRMSYNC_SECRET_KEY to the new key and CRMSYNC_SECRET_KEY_OLD to the key the tenants are sealed with"
                )
            })?;
            let ids = store.ids().await?;
            println!(
                "re-sealing {} tenant(s) with key {} (reading with {})",
                thousands(ids.len() as u64),
                key.id(),
                std::iter::once(key.id())
                    .chain(key.old_ids())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let (mut done, mut resealed) = (0usize, 0usize);
            for chunk in ids.chunks(batch.max(1)) {
                for id in chunk {
                    if store.reseal(id).await? {
                        resealed += 1;
                    }
                    done += 1;
                }
                println!(
                    "  {} tenant(s) checked, {} re-sealed",
                    out_of(done as u64, ids.len() as u64),
                    thousands(resealed as u64)
                );
            }
            store.reseal_key_check().await?;
            crmsync_ops::Audit::new(env.conn()?, &env.namespace)
                .record(
                    &crmsync_ops::Actor::cli(),
                    "keys.rotate",
                    &format!("{} tenant(s)", thousands(ids.len() as u64)),
                    "",
                    &format!("re-sealed {} with key {}", thousands(resealed as u64), key.id()),
                )
                .await?;
            println!(
                "every tenant is sealed with key {}; deploy without CRMSYNC_SECRET_KEY_OLD to retire the old key",
                key.id()
            );
            Ok(())
        }
    }
}
