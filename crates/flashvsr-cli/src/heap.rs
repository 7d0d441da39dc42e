//! Frame-sized host buffers stay in the heap. Every frame allocates and frees buffers of tens of
//! megabytes (LQ frames, decoded chunks, finished frames); glibc's default maps each one afresh
//! and unmaps it when freed, so every frame pays page faults and zeroing for them, and its
//! adaptive thresholds make that cost depend on the order buffers happen to be freed in (the same
//! work measured 8.0 M or 11.6 M page faults on the CPU bench depending on buffer lifetimes; 3.4 M
//! with these settings, and peak memory 8 % higher).

/// Buffers up to this size come from the heap and are reused.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 256 << 20;
/// Free memory kept at the top of the heap before it is handed back to the kernel.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 1 << 30;

/// Sets the allocator up for frame-sized buffers; call first thing, before other threads start.
pub fn keep_frame_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; a rejected value leaves the default.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}
