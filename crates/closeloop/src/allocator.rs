//! The allocator, and the one setting `serve` gives it.
//!
//! mimalloc reads its options from the environment once, when the process starts, and setting
//! them later takes a foreign call this workspace does not make (`unsafe_code` is forbidden).
//! So `serve` starts itself again, with the same arguments and process id, once the option is
//! in its environment ([`settle_for_serving`]).

/// mimalloc instead of the system allocator: the read models and the store's indexes make
/// millions of small allocations, where glibc's malloc spent 40% of a rebuild and kept freed
/// memory resident.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The mimalloc option `serve` sets: how long, in milliseconds, freed memory is kept before it
/// goes back to the system.
const PURGE_DELAY_VARIABLE: &str = "MIMALLOC_PURGE_DELAY";

/// `serve`'s value of [`PURGE_DELAY_VARIABLE`]: mimalloc's default of 1,000 leaves what start-up
/// freed (the snapshot's bytes among it) resident until some thread allocates a second later,
/// 859–915 MiB at the peak of a million loops against 718–722 MiB with this; 0 costs lists and
/// stats 30–50% of their requests a second, 10 nothing measurable (`docs/benchmarks.md`,
/// issue 12).
const PURGE_DELAY_MS: &str = "10";

/// Replaces this process by itself with [`PURGE_DELAY_VARIABLE`] in its environment, unless
/// the variable is set already (an operator's own value wins; and so the second start goes
/// on). Returns only when that cannot be done, after saying why: `serve` then runs with the
/// allocator's default, which costs memory, not correctness.
#[cfg(unix)]
pub fn settle_for_serving() {
    use std::os::unix::process::CommandExt;

    if std::env::var_os(PURGE_DELAY_VARIABLE).is_some() {
        return;
    }
    let cannot = |why: &dyn std::fmt::Display| {
        eprintln!("warning: cannot set {PURGE_DELAY_VARIABLE}={PURGE_DELAY_MS} for serve: {why}");
    };
    // The file this process runs, even if it was replaced on disk since it started.
    let proc_exe = std::path::Path::new("/proc/self/exe");
    let exe = if proc_exe.exists() {
        proc_exe.to_path_buf()
    } else {
        match std::env::current_exe() {
            Ok(exe) => exe,
            Err(err) => return cannot(&err),
        }
    };
    let mut args = std::env::args_os();
    let mut command = std::process::Command::new(exe);
    if let Some(program) = args.next() {
        command.arg0(program);
    }
    let err = command
        .args(args)
        .env(PURGE_DELAY_VARIABLE, PURGE_DELAY_MS)
        .exec();
    cannot(&format_args!("starting again failed: {err}"));
}

/// Elsewhere `serve` keeps the allocator's default.
#[cfg(not(unix))]
pub fn settle_for_serving() {}
