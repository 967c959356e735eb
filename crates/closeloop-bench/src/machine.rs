//! A one-line description of the machine a benchmark ran on, from `/proc` on Linux.
//!
//! Every part is optional: what cannot be read is left out rather than guessed.

use std::fs;
use std::path::{Path, PathBuf};

/// What the figures depend on: cores, memory, CPU, kernel and the temp dir's filesystem.
#[derive(Debug, Clone)]
pub struct Machine {
    /// Logical cores available to this process.
    pub cores: Option<usize>,
    /// Total memory in bytes.
    pub memory_bytes: Option<u64>,
    /// The CPU model name.
    pub cpu: Option<String>,
    /// The kernel release.
    pub kernel: Option<String>,
    /// Where the benchmarks write.
    pub temp_dir: PathBuf,
    /// The filesystem type (and device) of `temp_dir`.
    pub temp_filesystem: Option<String>,
}

impl Machine {
    /// Reads what it can about this machine; `temp_dir` is where the benchmarks write.
    #[must_use]
    pub fn probe(temp_dir: &Path) -> Self {
        Self {
            cores: std::thread::available_parallelism().ok().map(usize::from),
            memory_bytes: read("/proc/meminfo").and_then(|text| total_memory(&text)),
            cpu: read("/proc/cpuinfo").and_then(|text| cpu_model(&text)),
            kernel: read("/proc/sys/kernel/osrelease").map(|text| text.trim().to_owned()),
            temp_dir: temp_dir.to_owned(),
            temp_filesystem: read("/proc/self/mounts")
                .and_then(|mounts| filesystem_of(&mounts, temp_dir)),
        }
    }

    /// The description, e.g. `2 cores, 23.4 GiB memory, AMD EPYC 7B13, Linux 6.1.0, temp dir
    /// /tmp on ext4 (/dev/vda)`.
    #[must_use]
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(cores) = self.cores {
            parts.push(format!("{cores} cores"));
        }
        if let Some(bytes) = self.memory_bytes {
            parts.push(format!(
                "{:.1} GiB memory",
                bytes as f64 / f64::from(1u32 << 30)
            ));
        }
        if let Some(cpu) = &self.cpu {
            parts.push(cpu.clone());
        }
        if let Some(kernel) = &self.kernel {
            parts.push(format!("Linux {kernel}"));
        }
        if let Some(filesystem) = &self.temp_filesystem {
            parts.push(format!(
                "temp dir {} on {filesystem}",
                self.temp_dir.display()
            ));
        }
        if parts.is_empty() {
            "unknown".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

/// The 1-minute load average of `/proc/loadavg`: how busy the machine was, which a benchmark
/// that shares its cores with other work reports beside its figures.
#[must_use]
pub fn load_average() -> Option<f64> {
    read("/proc/loadavg").and_then(|text| first_load_average(&text))
}

/// The first field of `/proc/loadavg` (`0.52 0.58 0.59 1/467 12345`).
fn first_load_average(loadavg: &str) -> Option<f64> {
    loadavg.split_whitespace().next()?.parse().ok()
}

fn read(path: &str) -> Option<String> {
    fs::read_to_string(path).ok()
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
fn total_memory(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The first `model name` of `/proc/cpuinfo`.
fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(key, _)| key.trim() == "model name")
        .map(|(_, value)| value.trim().to_owned())
        .filter(|model| !model.is_empty())
}

/// The filesystem type and device of the deepest mount holding `dir`, from
/// `/proc/self/mounts`.
fn filesystem_of(mounts: &str, dir: &Path) -> Option<String> {
    let dir = dir.canonicalize().ok()?;
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let device = fields.next()?;
            let mount_point = fields.next()?.replace("\\040", " ");
            let fs_type = fields.next()?;
            dir.starts_with(&mount_point)
                .then(|| (mount_point.len(), format!("{fs_type} ({device})")))
        })
        // The last of equally deep mounts is the one on top.
        .max_by_key(|(depth, _)| *depth)
        .map(|(_, filesystem)| filesystem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_memory_and_cpu_model() {
        assert_eq!(
            total_memory("MemTotal:       16384 kB\nMemFree: 1 kB\n"),
            Some(16384 * 1024)
        );
        let cpuinfo = "processor\t: 0\nmodel name\t: Example CPU @ 2.0GHz\n";
        assert_eq!(cpu_model(cpuinfo).as_deref(), Some("Example CPU @ 2.0GHz"));
        assert_eq!(cpu_model("processor\t: 0\n"), None);
    }

    #[test]
    fn reads_the_load_average() {
        assert_eq!(
            first_load_average("2.16 3.87 5.81 3/412 9021\n"),
            Some(2.16)
        );
        assert_eq!(first_load_average(""), None);
    }

    #[test]
    fn picks_the_deepest_mount() {
        let mounts = "/dev/vda / ext4 rw 0 0\ntmpfs /tmp tmpfs rw 0 0\nproc /proc proc rw 0 0\n";
        let found = filesystem_of(mounts, &std::env::temp_dir());
        assert!(found.is_some());
        let root = filesystem_of(mounts, Path::new("/"));
        assert_eq!(root.as_deref(), Some("ext4 (/dev/vda)"));
    }
}
