//! Worker identities: unique per process, so a process restarted on the same host starts at
//! once instead of waiting for its old registration to expire.

/// `<host>:<pid>:<random>`. The host and pid make the name readable in `crmsync status`; the
/// random part keeps it unique when a pid is reused (containers restart as pid 1).
pub fn worker_identity(role: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    let rnd: u32 = rand::random::<u32>() & 0xff_ffff;
    format!("{role}@{host}:{}:{rnd:06x}", std::process::id())
}

#[cfg(test)]
mod tests {
    #[test]
    fn identities_are_unique_within_a_process() {
        let a = super::worker_identity("worker");
        let b = super::worker_identity("worker");
        assert_ne!(a, b);
        assert!(a.starts_with("worker@"));
        assert!(a.contains(&format!(":{}:", std::process::id())));
    }
}
