//! The allocator, and the settings `serve` gives it.
//!
//! mimalloc reads its options from the environment once, when the process starts, and setting
//! them later takes a foreign call this workspace does not make (`unsafe_code` is forbidden).
//! So `serve` starts itself again, with the same arguments and process id, once the options are
//! in its environment ([`settle_for_serving`]).

/// mimalloc instead of the system allocator: the read models and the store's indexes make
/// millions of small allocations, where glibc's malloc spent 40% of a rebuild and kept freed
/// memory resident.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The mimalloc options `serve` sets, each with its value (`docs/benchmarks.md`, issue 12):
///
/// - `MIMALLOC_PURGE_DELAY`, how long in milliseconds freed memory is kept before it goes back
///   to the system: mimalloc's default of 1,000 leaves what start-up freed (the snapshot's
///   bytes among it) resident until some thread allocates a second later, 859–915 MiB at the
///   peak of a million loops against 718–722 MiB with 10; 0 costs lists and stats 30–50% of
///   their requests a second, 10 nothing measurable.
/// - `MIMALLOC_ARENA_EAGER_COMMIT`, whether mimalloc commits each arena it reserves (1 GiB)
///   whole, or (0) as it hands the memory out: with 0 a million loops' `serve` held 452–453
///   MiB after the bench's requests instead of 497–504 (peak 681–690 instead of 721–787),
///   lists, stats and restarts as fast.
const SERVE_OPTIONS: [(&str, &str); 2] = [
    ("MIMALLOC_PURGE_DELAY", "10"),
    ("MIMALLOC_ARENA_EAGER_COMMIT", "0"),
];

/// Replaces this process by itself with [`SERVE_OPTIONS`] in its environment, unless each is
/// set already (an operator's own value wins; and so the second start goes on). Returns only
/// when that cannot be done, after saying why: `serve` then runs with the allocator's
/// defaults, which costs memory, not correctness.
#[cfg(unix)]
pub fn settle_for_serving() {
    use std::os::unix::process::CommandExt;

    let missing: Vec<(&str, &str)> = SERVE_OPTIONS
        .into_iter()
        .filter(|(variable, _)| std::env::var_os(variable).is_none())
        .collect();
    if missing.is_empty() {
        return;
    }
    let cannot = |why: &dyn std::fmt::Display| {
        eprintln!("warning: cannot set the allocator's options for serve: {why}");
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
    let err = command.args(args).envs(missing).exec();
    cannot(&format_args!("starting again failed: {err}"));
}

/// Elsewhere `serve` keeps the allocator's defaults.
#[cfg(not(unix))]
pub fn settle_for_serving() {}
