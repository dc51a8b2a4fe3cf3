//! A process's memory as `/proc` tells it: RSS (resident pages, shared ones counted in
//! full in every process that maps them: what `max_worker_memory` limits, as the
//! contract says) and PSS (each shared page divided among the processes sharing it:
//! what a worker really costs when it shares a zygote's pages, `preload_app`).

/// The resident set in bytes from the text of `/proc/PID/statm` (its second field, in
/// pages).
pub fn rss_from_statm(statm: &str, page_size: u64) -> Option<u64> {
    let pages: u64 = statm.split_ascii_whitespace().nth(1)?.parse().ok()?;
    pages.checked_mul(page_size)
}

/// A process's RSS in bytes, from `/proc/PID/statm`; None if it cannot be read (it has
/// just exited).
pub fn read_rss(pid: i32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let page_size = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(4096);
    rss_from_statm(&statm, page_size)
}

/// The proportional set in bytes from the text of `/proc/PID/smaps_rollup` (its
/// `Pss:` line, in kB).
pub fn pss_from_smaps_rollup(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Pss:"))?;
    let mut words = line["Pss:".len()..].split_ascii_whitespace();
    let kib: u64 = words.next()?.parse().ok()?;
    (words.next() == Some("kB") && words.next().is_none()).then_some(())?;
    kib.checked_mul(1024)
}

/// A process's PSS in bytes, from `/proc/PID/smaps_rollup` (Linux 4.14+); None if it
/// cannot be read (gone, or not this user's to read).
pub fn read_pss(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    pss_from_smaps_rollup(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pss_is_read_from_its_line_in_kib() {
        let text = "55d0c2a00000-7ffd5a1f4000 ---p 00000000 00:00 0   [rollup]\nRss:               12288 kB\nPss:                4100 kB\nPss_Anon:           2000 kB\n";
        assert_eq!(pss_from_smaps_rollup(text), Some(4100 * 1024));
        for bad in [
            "",
            "Rss: 1 kB\n",
            "Pss: x kB\n",
            "Pss: 12\n",
            "Pss: 12 MB\n",
            "Pss: 12 kB extra\n",
            "Pss: -1 kB\n",
            "Pss: 99999999999999999999 kB\n",
        ] {
            assert_eq!(pss_from_smaps_rollup(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn reads_its_own_rss_and_pss() {
        let me = std::process::id() as i32;
        assert!(read_rss(me).is_some_and(|r| r > 0));
        assert!(read_pss(me).is_some_and(|p| p > 0));
    }

    /// Random edits of a good rollup never panic.
    #[test]
    fn rollup_parsing_property() {
        let good = "Rss: 10 kB\nPss: 20 kB\n".as_bytes().to_vec();
        let alphabet = b"Ps: k0B9\n -";
        let mut state: u64 = 0x1234_5678_9abc_def1;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let mut bytes = good.clone();
            for _ in 0..(next() % 5) {
                let at = (next() % bytes.len() as u64) as usize;
                bytes[at] = alphabet[(next() % alphabet.len() as u64) as usize];
            }
            let text = String::from_utf8_lossy(&bytes);
            if let Some(pss) = pss_from_smaps_rollup(&text) {
                assert_eq!(pss % 1024, 0);
            }
        }
    }
}
