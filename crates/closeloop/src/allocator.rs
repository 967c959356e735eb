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

/// How long, in milliseconds, mimalloc keeps memory freed before it gives it back to the
/// system, for `serve`: its default of 1,000 leaves what start-up freed (the snapshot's bytes
/// among it) resident until some thread allocates a second later, 915 MiB at the peak of a
/// million loops against 722 MiB with this; 0 costs lists and stats 30–50% of their requests
/// a second, 10 nothing measurable (`docs/benchmarks.md`, issue 12).
const PURGE_DELAY: (&str, &str) = ("MIMALLOC_PURGE_DELAY", "10");

/// Replaces this process by itself with [`PURGE_DELAY`] in its environment, unless the
/// variable is set already (an operator's own value wins; and so the second start goes on).
/// Returns only when that cannot be done, after saying why: `serve` then runs with the
/// allocator's default, which costs memory, not correctness.
pub fn settle_for_serving() {
    let (name, value) = PURGE_DELAY;
    if std::env::var_os(name).is_some() {
        return;
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let mut args = std::env::args_os();
        let program = args.next();
        // The file this process runs, even if it was replaced on disk since it started.
        let exe = std::path::Path::new("/proc/self/exe");
        let exe = if exe.exists() {
            exe.to_path_buf()
        } else {
            match std::env::current_exe() {
                Ok(exe) => exe,
                Err(err) => {
                    eprintln!("warning: cannot set {name}={value} for serve: {err}");
                    return;
                }
            }
        };
        let mut command = std::process::Command::new(exe);
        command.args(args).env(name, value);
        if let Some(program) = program {
            command.arg0(program);
        }
        let err = command.exec();
        eprintln!("warning: cannot set {name}={value} for serve (starting again failed: {err})");
    }
}
