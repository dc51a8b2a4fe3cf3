//! The kernel's OOM kills in forkd's memory cgroup, to name a worker's SIGKILL that
//! forkd did not send.

/// `oom_kill` of cgroup v2's `memory.events`, or of v1's `memory.oom_control`.
pub fn kills() -> Option<u64> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let file = cgroups.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controllers.split(',').any(|c| c == "memory") {
            Some(format!("/sys/fs/cgroup/memory{path}/memory.oom_control"))
        } else if controllers.is_empty() {
            Some(format!("/sys/fs/cgroup{path}/memory.events"))
        } else {
            None
        }
    })?;
    let text = std::fs::read_to_string(file).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}
