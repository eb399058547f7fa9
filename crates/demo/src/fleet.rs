//! The processes the demo starts: each in its own process group (so `make demo KEEP=1` can
//! leave them running after the demo exits), its output in `target/demo/logs/<name>.log`.
//! Without KEEP, or when the demo fails or is interrupted, they are stopped: SIGTERM, then
//! SIGKILL after a grace period. With KEEP, their pids go to `target/demo/pids`, which `make
//! demo-stop` (`crmsync-demo stop`) reads to stop them.

use std::fs::File;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// Where the demo keeps its state: `<target dir>/demo` (the binary runs from
/// `<target dir>/release`).
#[derive(Debug, Clone)]
pub struct DemoDir(PathBuf);

impl DemoDir {
    pub fn locate() -> anyhow::Result<DemoDir> {
        if let Some(dir) = std::env::var_os("CRMSYNC_DEMO_DIR") {
            return Ok(DemoDir(PathBuf::from(dir)));
        }
        let exe = std::env::current_exe().context("cannot find the demo's own binary")?;
        let target = exe
            .parent()
            .and_then(Path::parent)
            .context("the demo binary is not inside a cargo target directory")?;
        Ok(DemoDir(target.join("demo")))
    }

    /// A private directory for a demo that keeps nothing (several can run at once), removed
    /// with [`DemoDir::remove`].
    pub fn temp() -> DemoDir {
        DemoDir(std::env::temp_dir().join(format!("crmsync-demo-{}", std::process::id())))
    }

    /// Removes the whole directory.
    pub fn remove(&self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn logs(&self) -> PathBuf {
        self.0.join("logs")
    }

    pub fn pids(&self) -> PathBuf {
        self.0.join("pids")
    }

    pub fn state_env(&self) -> PathBuf {
        self.0.join("state.env")
    }

    pub fn secret_key(&self) -> PathBuf {
        self.0.join("secret-key")
    }

    pub fn redis_data(&self) -> PathBuf {
        self.0.join("redis")
    }

    pub fn sim_config(&self) -> PathBuf {
        self.0.join("sim.json")
    }

    /// A path as shown to the reader: relative to the working directory when inside it.
    pub fn shown(&self, p: &Path) -> String {
        let cwd = std::env::current_dir().unwrap_or_default();
        p.strip_prefix(&cwd).unwrap_or(p).display().to_string()
    }

    /// Starts afresh: logs and Redis data of an earlier demo go, the directory is made.
    pub fn prepare(&self) -> anyhow::Result<()> {
        for d in [self.logs(), self.redis_data()] {
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        for f in [self.pids(), self.state_env(), self.secret_key(), self.sim_config()] {
            let _ = std::fs::remove_file(f);
        }
        Ok(())
    }
}

/// One process the demo started.
#[derive(Debug)]
struct Proc {
    name: String,
    /// The program, as recorded in the pids file (to recognise the process later).
    program: String,
    child: Child,
}

/// The processes started so far; stopped on drop unless [`Fleet::keep`] was called.
#[derive(Debug, Clone)]
pub struct Fleet {
    inner: Arc<Mutex<FleetInner>>,
    logs: PathBuf,
}

#[derive(Debug, Default)]
struct FleetInner {
    procs: Vec<Proc>,
    kept: bool,
}

impl Fleet {
    pub fn new(dir: &DemoDir) -> Fleet {
        Fleet {
            inner: Arc::new(Mutex::new(FleetInner::default())),
            logs: dir.logs(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, FleetInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The log file of process `name`.
    pub fn log(&self, name: &str) -> PathBuf {
        self.logs.join(format!("{name}.log"))
    }

    /// Starts `cmd` as `name` in its own process group, stdin closed, stdout and stderr to
    /// its log file. Returns its pid.
    pub fn spawn(&self, name: &str, mut cmd: Command) -> anyhow::Result<u32> {
        let log = self.log(name);
        let out = File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .process_group(0);
        let program = cmd.get_program().to_string_lossy().into_owned();
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name} ({program})"))?;
        let pid = child.id();
        self.lock().procs.push(Proc {
            name: name.to_owned(),
            program,
            child,
        });
        Ok(pid)
    }

    /// Whether process `name` is still running.
    pub fn running(&self, name: &str) -> bool {
        let mut inner = self.lock();
        inner
            .procs
            .iter_mut()
            .find(|p| p.name == name)
            .is_some_and(|p| matches!(p.child.try_wait(), Ok(None)))
    }

    /// Stops process `name` alone (SIGTERM, SIGKILL after `grace`) and forgets it.
    pub fn stop_one(&self, name: &str, grace: Duration) {
        let proc = {
            let mut inner = self.lock();
            let i = inner.procs.iter().position(|p| p.name == name);
            i.map(|i| inner.procs.remove(i))
        };
        if let Some(mut p) = proc {
            terminate_child(&mut p.child, grace);
        }
    }

    /// `<pid>\t<name>\t<program>` per process, in the order they started.
    pub fn pids_file(&self) -> String {
        self.lock()
            .procs
            .iter()
            .map(|p| format!("{}\t{}\t{}\n", p.child.id(), p.name, p.program))
            .collect()
    }

    /// Leaves every process running when the fleet is dropped.
    pub fn keep(&self) {
        self.lock().kept = true;
    }

    /// Stops every process, the last started first (SIGTERM to all, then SIGKILL to those
    /// still running after `grace`).
    pub fn stop_all(&self, grace: Duration) {
        let mut procs = std::mem::take(&mut self.lock().procs);
        for p in procs.iter().rev() {
            signal(p.child.id(), "TERM");
        }
        let deadline = Instant::now() + grace;
        for p in procs.iter_mut().rev() {
            while Instant::now() < deadline {
                if !matches!(p.child.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

impl Drop for FleetInner {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        for p in self.procs.iter_mut().rev() {
            terminate_child(&mut p.child, Duration::from_secs(5));
        }
    }
}

fn terminate_child(child: &mut Child, grace: Duration) {
    signal(child.id(), "TERM");
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Sends a signal by name (`TERM`, `KILL`) to one process with kill(1).
fn signal(pid: u32, name: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether `pid` runs `program` (so a pid the system gave to another process since is left
/// alone): by the name of its executable (`comm`, at most 15 bytes) or its first argument
/// (which `redis-server` rewrites to `redis-server <host>:<port>`).
fn runs(pid: u32, program: &str) -> bool {
    let base = |s: &str| s.rsplit('/').next().unwrap_or(s).to_owned();
    let want = base(program);
    if let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) {
        let short: String = want.chars().take(15).collect();
        if comm.trim_end() == short {
            return true;
        }
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    let argv0 = String::from_utf8_lossy(argv0);
    let first = argv0.split(' ').next().unwrap_or_default();
    !first.is_empty() && base(first) == want
}

/// `make demo-stop`: stops the processes listed in the pids file (SIGTERM, then SIGKILL after
/// `grace`) and removes the demo's state. Safe when nothing runs. Returns how many were
/// running.
pub fn stop_kept(dir: &DemoDir, grace: Duration) -> usize {
    let listed = std::fs::read_to_string(dir.pids()).unwrap_or_default();
    let mut alive: Vec<(u32, String)> = Vec::new();
    for line in listed.lines() {
        let mut it = line.split('\t');
        let (Some(pid), Some(name), Some(program)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if runs(pid, program) {
            alive.push((pid, name.to_owned()));
            signal(pid, "TERM");
        }
    }
    let deadline = Instant::now() + grace;
    for (pid, name) in alive.iter().rev() {
        while Instant::now() < deadline && std::path::Path::new(&format!("/proc/{pid}")).exists() && !zombie(*pid) {
            std::thread::sleep(Duration::from_millis(50));
        }
        if std::path::Path::new(&format!("/proc/{pid}")).exists() && !zombie(*pid) {
            eprintln!("{name} (pid {pid}) did not stop within {} s: killed", grace.as_secs());
            signal(*pid, "KILL");
        }
    }
    for f in [dir.pids(), dir.state_env(), dir.secret_key(), dir.sim_config()] {
        let _ = std::fs::remove_file(f);
    }
    let _ = std::fs::remove_dir_all(dir.redis_data());
    alive.len()
}

fn zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next().map(|rest| rest.trim_start().starts_with('Z')))
        .unwrap_or(true)
}
