//! `crmsync salesforce exchange-code`: turn a Salesforce authorization code into the tenant's
//! refresh token.

use clap::Subcommand;
use crmsync_tenants::{Crm, SecretKey, TenantStore};

use crate::Env;

#[derive(Subcommand)]
pub enum SalesforceCmd {
    /// Exchange an authorization code (from the connected app's OAuth redirect, web server
    /// flow) for a refresh token, stored sealed with the tenant. The token is never printed.
    #[command(after_help = crate::SECRET_KEY_HELP)]
    ExchangeCode {
        /// The tenant the refresh token is for.
        tenant: String,
        /// The authorization code (or CRMSYNC_SF_AUTH_CODE). It is usable once, for 15 minutes.
        #[arg(long, env = "CRMSYNC_SF_AUTH_CODE", hide_env_values = true)]
        code: String,
        /// The callback URL of the connected app the code was issued to (Salesforce checks it
        /// against the one the authorization request named).
        #[arg(long)]
        redirect_uri: Option<String>,
        /// The code re-authorizes the org the tenant already writes to (say, after a revoked
        /// grant): crmsync keeps what it knows of that org. Without it the new grant is a new
        /// destination: its state starts empty and the next backfill writes every contact.
        #[arg(long)]
        same_org: bool,
    },
}

pub async fn run(env: &Env, cmd: SalesforceCmd) -> anyhow::Result<()> {
    crmsync_worker::install_tls();
    match cmd {
        SalesforceCmd::ExchangeCode {
            tenant,
            code,
            redirect_uri,
            same_org,
        } => {
            let store = TenantStore::new(env.conn()?, &env.namespace, Some(SecretKey::from_env()?));
            let mut t = store.get(&tenant).await?;
            let Crm::Salesforce(c) = &mut t.crm else {
                anyhow::bail!(
                    "tenant `{tenant}` writes to {}; use `crmsync zoho exchange-code`",
                    t.crm.kind().label()
                );
            };
            let http = crmsync_sink::zoho::http_client(std::time::Duration::from_secs(30))?;
            let refresh = crmsync_sink::salesforce::exchange_code(&http, c, &code, redirect_uri.as_deref()).await?;
            c.refresh_token = Some(refresh);
            let updated = store
                .update_with(
                    t,
                    crmsync_tenants::UpdateOptions {
                        reauthorized: true,
                        same_org,
                    },
                )
                .await?;
            println!("tenant `{tenant}`: Salesforce refresh token stored (sealed)");
            crate::tenant::after_update(env, &tenant, &updated).await?;
        }
    }
    Ok(())
}
