// SPDX-License-Identifier: GPL-2.0-only
//! Anonymous memory mappings: the replay's chunks, and react's stamps
//! (shared with its hog child) and the hog's own memory.

/// A fresh anonymous read-write mapping of @len bytes, shared across fork
/// or private.
pub fn map(len: usize, shared: bool) -> std::io::Result<*mut u8> {
    let kind = if shared { libc::MAP_SHARED } else { libc::MAP_PRIVATE };
    // SAFETY: no address hint, no file; the result is checked below.
    let p = unsafe {
        libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, kind | libc::MAP_ANONYMOUS, -1, 0)
    };
    if p == libc::MAP_FAILED {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(p as *mut u8)
    }
}

/// Unmap what [`map`] returned for @len bytes.
///
/// # Safety
/// @p and @len must be one mapping from [`map`], with no reference into it
/// left.
pub unsafe fn unmap(p: *mut u8, len: usize) {
    // SAFETY: the caller's promise
    unsafe { libc::munmap(p as *mut libc::c_void, len) };
}
