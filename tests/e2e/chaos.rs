//! The small chaos run of `make test` (the full one is `make chaos`): faults, SIGKILLed
//! workers and a Redis crash during backfills; every CRM must end equal to its address book,
//! with no duplicate, no loss, no budget overshoot and no dead letter.

use crmsync_e2e::chaos::{ChaosConfig, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfills_survive_faults_worker_kills_and_a_redis_crash() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let report = run(&ChaosConfig::small()).await.expect("chaos run");
    println!("{}", report.render());
    assert!(
        report.worker_kills >= 3,
        "the chaos happened: {} kills",
        report.worker_kills
    );
    assert_eq!(report.redis_restarts, 1);
    assert!(
        report.faults_injected >= 3,
        "Zoho faults were injected: {}",
        report.faults_injected
    );
    assert!(
        report.nylas_faults_injected >= 1,
        "Nylas faults were injected: {}",
        report.nylas_faults_injected
    );
    let budgeted = &report.tenants[0];
    assert!(
        budgeted.credits > budgeted.allowed,
        "the small budget bound and was refilled: {budgeted:?}"
    );
    let violations = report.violations();
    assert!(violations.is_empty(), "{}", report.render());
}
