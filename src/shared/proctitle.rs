//! Process names that `ps` tells apart (`forkd: master`, `forkd: worker [N]`): rewrites
//! the argv area the kernel shows in /proc/PID/cmdline, and sets the thread name (comm).
//! The original argv is captured first (`std::env::args_os`) so nothing else depends on it.

use std::fs;

/// `base` with `proc_name` after it in brackets, as Gunicorn's `gunicorn: master [NAME]`.
pub fn titled(base: &str, proc_name: Option<&str>) -> String {
    match proc_name {
        Some(name) => format!("{base} [{name}]"),
        None => base.to_string(),
    }
}

/// Sets the visible process title. Best effort: a failure leaves the old title.
pub fn set(title: &str) {
    let comm: String = title.chars().take(15).collect();
    if let Ok(name) = std::ffi::CString::new(comm) {
        let _ = nix::sys::prctl::set_name(&name);
    }
    let _ = overwrite_argv(title);
}

fn overwrite_argv(title: &str) -> Option<()> {
    // Fields 48 and 49 of /proc/self/stat are arg_start and arg_end; the command name
    // (field 2) may contain spaces, so split after its closing parenthesis.
    let stat = fs::read_to_string("/proc/self/stat").ok()?;
    let after_comm = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_comm.split(' ').collect();
    let arg_start: usize = fields.get(48 - 3)?.parse().ok()?;
    let arg_end: usize = fields.get(49 - 3)?.parse().ok()?;
    if arg_end <= arg_start + 1 {
        return None;
    }
    let capacity = arg_end - arg_start;
    let bytes = title.as_bytes();
    let len = bytes.len().min(capacity - 1);
    // SAFETY: [arg_start, arg_end) is this process's own argv string area, mapped
    // writable on the initial stack; we stay within it and NUL-terminate.
    unsafe {
        let area = std::slice::from_raw_parts_mut(arg_start as *mut u8, capacity);
        area[..len].copy_from_slice(&bytes[..len]);
        area[len..].fill(0);
    }
    Some(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_proc_name_follows_the_role_in_brackets() {
        assert_eq!(super::titled("forkd: master", None), "forkd: master");
        assert_eq!(
            super::titled("forkd: worker [3]", Some("shop api")),
            "forkd: worker [3] [shop api]"
        );
    }
}
