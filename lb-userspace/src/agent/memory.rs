//! Keeping the agent small: glibc's malloc tuned so that what a big config
//! once took is given back (the parsing itself happens in a child process,
//! [`super::parse_child`]).

/// Tunes glibc's malloc, before any thread exists: one arena (the agent's
/// threads are few and cold, and `malloc_trim` returns free pages of the main
/// heap, not of thread heaps) and fixed thresholds (glibc otherwise raises them
/// after big frees and then keeps freed memory).
pub fn settle_allocator() {
    // SAFETY: mallopt only tunes the allocator.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1024 * 1024);
    }
}

/// Returns freed heap to the system (glibc keeps it otherwise).
pub fn give_back() {
    // SAFETY: malloc_trim only releases free memory.
    unsafe { libc::malloc_trim(0) };
}
