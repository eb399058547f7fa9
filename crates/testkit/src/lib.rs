//! Test support for crmsync: an ephemeral `redis-server` per test on a free port (the
//! zero2prod `spawn_app()` pattern: every test owns its Redis and never touches another),
//! child processes that are killed when the test ends, and binary lookup.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A free TCP port on loopback (bind to port 0, read it back, release it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

/// A fresh, empty directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "crmsync-{label}-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            Instant::now().elapsed().as_nanos()
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Options of an ephemeral Redis.
#[derive(Debug, Clone, Copy, Default)]
pub struct RedisOptions {
    /// Append-only file with `appendfsync always`, so a restart keeps every acknowledged write.
    pub aof: bool,
    /// Cluster mode (`--cluster-enabled yes`), for [`RedisCluster`].
    pub cluster: bool,
}

/// A `redis-server` started for one test on a free loopback port; killed and its directory
/// removed on drop.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    opts: RedisOptions,
    dir: TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a Redis without persistence.
    pub fn start() -> Self {
        Self::start_with(RedisOptions::default())
    }

    pub fn start_with(opts: RedisOptions) -> Self {
        let mut dir = TempDir::new("redis");
        let mut last_err = String::new();
        for _ in 0..10 {
            let port = free_port();
            let mut server = RedisServer {
                port,
                opts,
                dir,
                child: None,
            };
            match server.spawn() {
                Ok(()) => return server,
                Err(e) => {
                    last_err = e;
                    dir = std::mem::replace(&mut server.dir, TempDir::new("redis"));
                    server.kill();
                }
            }
        }
        panic!("could not start redis-server: {last_err}");
    }

    fn spawn(&mut self) -> Result<(), String> {
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--save")
            .arg("")
            .arg("--protected-mode")
            .arg("no")
            .arg("--logfile")
            .arg("redis.log");
        if self.opts.cluster {
            cmd.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
            ]);
        }
        if self.opts.aof {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let child = cmd.spawn().map_err(|e| {
            format!("redis-server is not installed or not on PATH ({e}); run `make test`, which installs Debian's redis-server package")
        })?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                let mut err = String::new();
                if let Some(mut e) = c.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                let log = std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
                return Err(format!("redis-server exited ({status}): {err} {}", last_lines(&log, 5)));
            }
            if self.ping() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err("redis-server did not answer PING within 10 s".into())
    }

    fn ping(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else {
            return false;
        };
        let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(200)) else {
            return false;
        };
        redis::cmd("PING").query::<String>(&mut conn).is_ok()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("valid redis url")
    }

    /// A synchronous connection, for test assertions.
    pub fn conn(&self) -> redis::Connection {
        self.client().get_connection().expect("connect to test redis")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Stops Redis cleanly (`SHUTDOWN`, so an append-only file is complete).
    pub fn shutdown(&mut self) {
        if let Ok(mut c) = self.client().get_connection_with_timeout(Duration::from_secs(1)) {
            let _: redis::RedisResult<()> = redis::cmd("SHUTDOWN").query(&mut c);
        }
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills Redis with SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts Redis again on the same port and directory (with AOF, the data comes back).
    pub fn start_again(&mut self) {
        if self.child.is_some() {
            return;
        }
        // The port was ours a moment ago; retry briefly while the old socket closes.
        let mut last = String::new();
        for _ in 0..50 {
            match self.spawn() {
                Ok(()) => return,
                Err(e) => {
                    last = e;
                    self.child = None;
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        panic!("could not restart redis-server on port {}: {last}", self.port);
    }

    /// A clean restart: `SHUTDOWN` then start on the same port.
    pub fn restart(&mut self) {
        self.shutdown();
        self.start_again();
    }

    /// Freezes Redis (SIGSTOP): connections stay open but nothing answers, as in a network
    /// partition or a stalled host.
    pub fn freeze(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, "STOP");
        }
    }

    /// Undoes [`RedisServer::freeze`].
    pub fn thaw(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, "CONT");
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.thaw();
        self.kill();
    }
}

/// A local Redis Cluster of `n` masters (no replicas) on free loopback ports, its 16,384
/// slots split evenly; stopped on drop.
#[derive(Debug)]
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start(n: usize) -> Self {
        assert!(n >= 1);
        let nodes: Vec<RedisServer> = (0..n)
            .map(|_| {
                RedisServer::start_with(RedisOptions {
                    cluster: true,
                    ..RedisOptions::default()
                })
            })
            .collect();
        const SLOTS: usize = 16_384;
        for (i, node) in nodes.iter().enumerate() {
            let mut c = node.conn();
            let (first, last) = (i * SLOTS / n, (i + 1) * SLOTS / n - 1);
            let _: () = redis::cmd("CLUSTER")
                .arg("ADDSLOTSRANGE")
                .arg(first)
                .arg(last)
                .query(&mut c)
                .expect("CLUSTER ADDSLOTSRANGE");
            for other in &nodes {
                let _: () = redis::cmd("CLUSTER")
                    .arg("MEET")
                    .arg("127.0.0.1")
                    .arg(other.port())
                    .query(&mut c)
                    .expect("CLUSTER MEET");
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = nodes.iter().all(|node| {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut node.conn())
                    .unwrap_or_default();
                info.contains("cluster_state:ok") && info.contains(&format!("cluster_known_nodes:{n}"))
            });
            if ok {
                return RedisCluster { nodes };
            }
            assert!(Instant::now() < deadline, "the cluster did not form within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `redis+cluster://` URL naming every node.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())).collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// Keys stored on each node (`DBSIZE`), in node order.
    pub fn keys_per_node(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .map(|n| redis::cmd("DBSIZE").query(&mut n.conn()).unwrap_or(0))
            .collect()
    }
}

fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// Sends a signal by name (`TERM`, `KILL`, `STOP`, `CONT`) with kill(1).
pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A child process killed (SIGKILL) when dropped, with its output captured to a file so a
/// failing test can show it.
#[derive(Debug)]
pub struct ChildProcess {
    pub name: String,
    child: Option<Child>,
    log: PathBuf,
    _dir: TempDir,
}

impl ChildProcess {
    /// Spawns `cmd` with stdout and stderr redirected to a log file.
    pub fn spawn(name: &str, mut cmd: Command) -> Self {
        let dir = TempDir::new("proc");
        let log = dir.path().join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("create log file");
        let err = file.try_clone().expect("clone log file");
        cmd.stdout(Stdio::from(file))
            .stderr(Stdio::from(err))
            .stdin(Stdio::null());
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        ChildProcess {
            name: name.to_owned(),
            child: Some(child),
            log,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and waits up to `timeout` for the process to exit; returns its exit code
    /// (None if it had to be killed or died from a signal).
    pub fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        let mut c = self.child.take()?;
        signal(c.id(), "TERM");
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Waits for the process to exit by itself; returns its exit code.
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(status))) => {
                    self.child = None;
                    return status.code();
                }
                None => return None,
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        None
    }

    /// Everything the process printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Lines of output so far.
    pub fn lines(&self) -> Vec<String> {
        std::fs::File::open(&self.log)
            .map(|f| BufReader::new(f).lines().map_while(Result::ok).collect())
            .unwrap_or_default()
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- output of {} ---\n{}", self.name, last_lines(&self.output(), 60));
        }
    }
}

/// Path of a binary built in this workspace's target directory (next to the test binary's
/// `deps/` directory), e.g. `crmsync`.
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "binary {} not built; run the tests through `make test` (cargo nextest run --workspace builds every binary)",
        path.display()
    );
    path
}

/// Polls `check` every 20 ms until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
