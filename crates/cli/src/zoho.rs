//! `crmsync zoho exchange-code`: turn a Zoho grant code into the tenant's refresh token.

use clap::Subcommand;
use crmsync_tenants::{Crm, Secret, SecretKey, TenantStore};

use crate::Env;

#[derive(Subcommand)]
pub enum ZohoCmd {
    /// Exchange a grant code (from Zoho's consent redirect or the API console's Self Client)
    /// for a refresh token, stored sealed with the tenant. The token is never printed.
    #[command(after_help = crate::SECRET_KEY_HELP)]
    ExchangeCode {
        /// The tenant the refresh token is for.
        tenant: String,
        /// The grant code (or CRMSYNC_ZOHO_GRANT_CODE).
        #[arg(long, env = "CRMSYNC_ZOHO_GRANT_CODE", hide_env_values = true)]
        code: String,
        /// The redirect URI registered with the client, when it has one.
        #[arg(long)]
        redirect_uri: Option<String>,
        /// The code re-authorizes the org the tenant already writes to (say, after a revoked
        /// grant): crmsync keeps what it knows of that org. Without it the new grant is a new
        /// destination: its state starts empty and the next backfill writes every contact.
        #[arg(long)]
        same_org: bool,
    },
}

pub async fn run(env: &Env, cmd: ZohoCmd) -> anyhow::Result<()> {
    crmsync_worker::install_tls();
    match cmd {
        ZohoCmd::ExchangeCode {
            tenant,
            code,
            redirect_uri,
            same_org,
        } => {
            let store = TenantStore::new(env.conn()?, &env.namespace, Some(SecretKey::from_env()?));
            let mut t = store.get(&tenant).await?;
            let Crm::Zoho(z) = &mut t.crm else {
                anyhow::bail!(
                    "tenant `{tenant}` writes to {}; use `crmsync salesforce exchange-code`",
                    t.crm.kind().label()
                );
            };
            let accounts = z
                .accounts_url()
                .ok_or_else(|| anyhow::anyhow!("tenant `{tenant}` has no Zoho region or accounts URL"))?;
            let http = crmsync_sink::zoho::http_client(std::time::Duration::from_secs(30))?;
            let refresh = crmsync_sink::zoho::exchange_code(
                &http,
                &accounts,
                &z.client_id,
                z.client_secret.expose(),
                &code,
                redirect_uri.as_deref(),
            )
            .await
            .map_err(crmsync_sink::SinkError::from)?;
            z.refresh_token = Some(Secret::new(refresh));
            let updated = store
                .update_with(
                    t,
                    crmsync_tenants::UpdateOptions {
                        reauthorized: true,
                        same_org,
                    },
                )
                .await?;
            println!("tenant `{tenant}`: Zoho refresh token stored (sealed)");
            crate::tenant::after_update(env, &tenant, &updated).await?;
        }
    }
    Ok(())
}
