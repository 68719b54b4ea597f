//! The few system calls the tests, the quick start and the benchmark need beyond std, behind safe
//! functions, so the crates that use them (the operator's tests among them) forbid `unsafe`.

pub use libc::{SIGCONT, SIGKILL, SIGSTOP, SIGTERM};

/// Sends `signal` to every process of the process group `pgid` (a child started with
/// `process_group(0)` leads a group whose id is its pid). A group already gone is not an error.
pub fn kill_process_group(pgid: u32, signal: i32) {
    let Ok(pgid) = i32::try_from(pgid) else { return };
    // SAFETY: kill(2) takes plain integers and touches no memory of this process.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(-pgid, signal);
    }
}

/// Runs `f` when the process exits normally (returning from `main` or `std::process::exit`), as
/// a test binary does after its last test: `atexit(3)`.
pub fn at_exit(f: extern "C" fn()) {
    // SAFETY: registers a plain function pointer; `f` captures nothing.
    #[allow(unsafe_code)]
    unsafe {
        libc::atexit(f);
    }
}
