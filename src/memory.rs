//! Memory hygiene: hand freed heap back to the system, and read this process's resident size.

/// Give freed heap pages back to the system: the parse tree of a multi-megabyte document is
/// freed after rendering, but the allocators keep its pages otherwise. Both allocators are
/// asked: jemalloc (the binary's global allocator) purges every arena's dirty pages, glibc
/// (what C code allocates, and everything in a build without jemalloc, such as the tests' own
/// processes) trims its arenas.
pub fn release_freed_memory() {
    // "arena.<MALLCTL_ARENAS_ALL>.purge": 4096 names all arenas. A process whose allocator is
    // not jemalloc has no arenas to purge, and the call does nothing.
    // SAFETY: a NUL-terminated control name that takes no input and gives no output.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            c"arena.4096.purge".as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        );
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// This process's resident memory in bytes (0 when /proc cannot tell).
pub fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * page_size())
}

fn page_size() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

/// Milliseconds of a monotonic clock since this process first asked: for deadlines that must
/// not move with the wall clock.
pub fn monotonic_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    EPOCH
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

/// `at` as [`monotonic_ms`].
pub fn monotonic_ms_at(at: std::time::Instant) -> u64 {
    let now = std::time::Instant::now();
    let ms = monotonic_ms();
    if at >= now {
        ms + (at - now).as_millis() as u64
    } else {
        ms.saturating_sub((now - at).as_millis() as u64)
    }
}
