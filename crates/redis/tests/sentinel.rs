//! Behind Redis Sentinel: a `redis+sentinel://` connection finds the master, and after the
//! master dies and Sentinel promotes its replica, the same connection carries on against the
//! new master.

use std::process::Command;
use std::time::Duration;

use crmsync_redis::{RedisTarget, connect};
use crmsync_testkit::{ChildProcess, RedisServer, TempDir, eventually, free_port};

async fn set(conn: &mut crmsync_redis::RedisConn, k: &str, v: &str) -> redis::RedisResult<()> {
    redis::cmd("SET").arg(k).arg(v).query_async(conn).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_connection_follows_a_failover() {
    let mut master = RedisServer::start();
    let replica = RedisServer::start();
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(master.port())
        .query(&mut replica.conn())
        .expect("replicaof");
    let dir = TempDir::new("sentinel");
    let conf = dir.path().join("sentinel.conf");
    let port = free_port();
    std::fs::write(
        &conf,
        format!(
            "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor crm 127.0.0.1 {} 1\nsentinel down-after-milliseconds crm 1000\nsentinel failover-timeout crm 10000\n",
            dir.path().display(),
            master.port()
        ),
    )
    .expect("conf");
    let mut cmd = Command::new("redis-server");
    cmd.arg(&conf).arg("--sentinel");
    let _sentinel = ChildProcess::spawn("sentinel", cmd);
    // The sentinel knows the replica once the master reports it.
    eventually(Duration::from_secs(20), "the sentinel to see the replica", || async {
        let c = redis::Client::open(format!("redis://127.0.0.1:{port}/")).ok()?;
        let mut c = c.get_multiplexed_async_connection().await.ok()?;
        let replicas: Vec<redis::Value> = redis::cmd("SENTINEL")
            .arg("REPLICAS")
            .arg("crm")
            .query_async(&mut c)
            .await
            .ok()?;
        (!replicas.is_empty()).then_some(())
    })
    .await;

    let target = RedisTarget::parse(&format!("redis+sentinel://127.0.0.1:{port}/crm")).expect("url");
    let mut conn = connect(&target, Duration::from_secs(1)).expect("connect");
    set(&mut conn, "before", "1").await.expect("write to the master");
    let on_master: Option<String> = redis::cmd("GET").arg("before").query(&mut master.conn()).expect("get");
    assert_eq!(on_master.as_deref(), Some("1"));

    master.kill();
    // Writes fail while Sentinel notices and promotes; then the same connection writes to the
    // new master.
    eventually(Duration::from_secs(30), "writes to reach the promoted replica", || {
        let mut conn = conn.clone();
        async move { set(&mut conn, "after", "2").await.ok() }
    })
    .await;
    let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut replica.conn()).expect("role");
    assert_eq!(role.first(), Some(&redis::Value::BulkString(b"master".to_vec())));
    let on_new: Option<String> = redis::cmd("GET").arg("after").query(&mut replica.conn()).expect("get");
    assert_eq!(on_new.as_deref(), Some("2"));
}
