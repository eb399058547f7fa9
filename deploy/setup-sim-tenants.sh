#!/bin/sh
# Registers the simulator's tenants (deploy/sim.json) with crmsync, pointing their Nylas API URI
# and Zoho accounts server at the simulator; the Zoho API domain then comes with each token
# (sim.json's public_url). Run by the compose `setup` service; safe to run again: a tenant
# already registered is updated instead of added.
#
# The credentials are the simulator's defaults derived from each tenant's name (see
# crates/sim/src/config.rs): grant-<name>, nyk-<name>, cid-<name>, cs-<name>, rt-<name>.
# Keep TENANTS in step with sim.json.
set -eu

SIM_URL=${SIM_URL:-http://sim:9999}
# name:region (the Nylas region and the Zoho DC are the same in sim.json)
TENANTS=${TENANTS:-"acme:us globex:eu initech:us"}
: "${CRMSYNC_WEBHOOK_SECRET:?set CRMSYNC_WEBHOOK_SECRET to sim.json webhooks.secret}"

for spec in $TENANTS; do
    name=${spec%%:*}
    region=${spec#*:}
    if crmsync tenant show "$name" >/dev/null 2>&1; then verb=set; else verb=add; fi
    # Secrets go through the environment, never flags (process lists show flags).
    CRMSYNC_NYLAS_API_KEY="nyk-$name" \
    CRMSYNC_ZOHO_CLIENT_SECRET="cs-$name" \
    CRMSYNC_ZOHO_REFRESH_TOKEN="rt-$name" \
        crmsync tenant "$verb" "$name" \
            --nylas-grant-id "grant-$name" \
            --nylas-api-uri "$SIM_URL/nylas/$region" \
            --zoho-region "$region" \
            --zoho-accounts-url "$SIM_URL/zoho/$region/accounts" \
            --zoho-client-id "cid-$name"
done
crmsync tenant list
