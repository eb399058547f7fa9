//! The `crmsync-sim serve` binary.

use std::io::{BufRead as _, BufReader, Read as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crmsync_testkit::TempDir;

#[tokio::test]
async fn serve_prints_one_listening_line_serves_and_stops_on_sigterm() {
    let dir = TempDir::new("sim-bin");
    let cfg = dir.path().join("sim.json");
    std::fs::write(&cfg, r#"{"seed": 5, "tenants": [{"name": "acme", "contacts": 10}]}"#).expect("write config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_crmsync-sim"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn crmsync-sim");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read line");
        (line, stdout)
    });
    let (line, mut stdout) = tokio::time::timeout(Duration::from_secs(30), line)
        .await
        .expect("listening line within 30 s")
        .expect("reader");
    let base = line
        .trim_end()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");

    let health = crate::client()
        .get(format!("{base}/_sim/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(health.text().await.expect("body"), "ok");
    let book: serde_json::Value = crate::client()
        .get(format!("{base}/_sim/nylas/grant-acme/contacts"))
        .send()
        .await
        .expect("book")
        .json()
        .await
        .expect("json");
    assert_eq!(book.as_array().map(Vec::len), Some(10));

    crmsync_testkit::signal(child.id(), "TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "crmsync-sim did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status}");
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).expect("read rest");
    assert_eq!(rest, "", "only one line on stdout");
}

#[test]
fn serve_rejects_an_invalid_config_with_a_message() {
    let dir = TempDir::new("sim-bin-bad");
    let cfg = dir.path().join("sim.json");
    std::fs::write(&cfg, r#"{"time_scale": -1}"#).expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_crmsync-sim"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .expect("run crmsync-sim");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("time_scale"));
    assert!(out.stdout.is_empty());
}
