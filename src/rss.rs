//! The resident memory of a process, as `reload-on-rss` and the stats read it: Linux's
//! `/proc/PID/statm` counts resident pages (its second field); uWSGI reads the same number.

/// Bytes of `pid` resident in memory now.
pub fn of(pid: u32) -> std::io::Result<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm"))?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("/proc/{pid}/statm: no resident page count in {statm:?}"),
            )
        })?;
    Ok(pages * page_size())
}

fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_has_resident_memory() {
        let rss = super::of(std::process::id()).unwrap();
        assert!(rss > 1 << 20, "{rss} bytes");
        assert!(super::of(u32::MAX).is_err(), "no such process");
    }
}
