//! How many CPUs this process may use (`workers = "auto"`): its affinity mask, limited
//! by a cgroup CPU quota.

/// CPUs this process may use: its affinity mask, limited by a cgroup CPU quota.
pub fn available_cpus() -> usize {
    let affinity = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
        .map(|set| {
            (0..nix::sched::CpuSet::count())
                .filter(|&i| set.is_set(i).unwrap_or(false))
                .count()
        })
        .unwrap_or(0);
    let affinity = if affinity == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        affinity
    };
    match cgroup_cpu_quota() {
        Some(quota) => affinity.min(quota).max(1),
        None => affinity.max(1),
    }
}

/// The cgroup (v2, else v1) CPU quota of this process in whole CPUs, rounded up.
pub(super) fn cgroup_cpu_quota() -> Option<usize> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let (quota, period) = if controllers.is_empty() {
            let text = std::fs::read_to_string(format!("/sys/fs/cgroup{path}/cpu.max"))
                .or_else(|_| std::fs::read_to_string("/sys/fs/cgroup/cpu.max"))
                .ok()?;
            let mut fields = text.split_whitespace();
            let quota = fields.next()?;
            if quota == "max" {
                return None;
            }
            (
                quota.parse::<f64>().ok()?,
                fields.next()?.parse::<f64>().ok()?,
            )
        } else if controllers.split(',').any(|c| c == "cpu") {
            let base = format!("/sys/fs/cgroup/{controllers}{path}");
            let quota: f64 = std::fs::read_to_string(format!("{base}/cpu.cfs_quota_us"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            if quota <= 0.0 {
                return None;
            }
            let period: f64 = std::fs::read_to_string(format!("{base}/cpu.cfs_period_us"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            (quota, period)
        } else {
            continue;
        };
        if period > 0.0 {
            return Some((quota / period).ceil() as usize);
        }
    }
    None
}
