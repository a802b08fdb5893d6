//! Compute threads: how many, and on which cores.
//!
//! A phone has fast and slow cores (1+3+4, 2+6, …). The work of each matmul
//! is split among the threads and waits for the slowest, so a thread on a
//! little core slows everyone down (llama.cpp#21763: threads beyond the big
//! cores collapse throughput). The default is one thread per performance
//! core, and the pool's workers are pinned to those cores where the OS
//! allows. The thread that calls `generate` works too and is the app's, so
//! it is left where the OS puts it (a busy thread migrates to a big core).
//!
//! candle sizes its worker pool once per process from `CANDLE_NUM_THREADS`,
//! read on first use, so the first model loaded decides for the whole
//! process; later requests get that count.

use once_cell::sync::OnceCell;

/// The threads in force and the cores their workers are pinned to (empty:
/// not pinned — one kind of core, or the OS does not say which is fast).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub threads: usize,
    pub cores: Vec<usize>,
}

static PLAN: OnceCell<Plan> = OnceCell::new();

/// Fixes the process-wide plan (first caller wins) and returns it.
pub(crate) fn configure(requested: Option<usize>) -> Plan {
    PLAN.get_or_init(|| {
        // An explicit environment setting from the host app wins over our default.
        let from_env = ["CANDLE_NUM_THREADS", "RAYON_NUM_THREADS"]
            .iter()
            .find_map(|k| std::env::var(k).ok()?.parse::<usize>().ok().filter(|n| *n > 0));
        let fast = performance_cores();
        let n = requested.or(from_env).or(fast.as_ref().map(Vec::len)).unwrap_or_else(num_physical);
        // Set before candle's pool exists (it is created on the first matmul,
        // after this), inside the once-cell so no other thread of ours races it.
        std::env::set_var("CANDLE_NUM_THREADS", n.to_string());
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        // More threads than fast cores would only crowd them: then the OS
        // places them.
        let cores = fast.filter(|c| n <= c.len()).filter(|c| pin_workers(c)).unwrap_or_default();
        Plan { threads: n, cores }
    })
    .clone()
}

fn num_physical() -> usize {
    candle_core::utils::get_num_threads()
}

/// The performance cores of this device, if it has more than one kind.
fn performance_cores() -> Option<Vec<usize>> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    return fastest_clusters(std::path::Path::new("/sys/devices/system/cpu"));
    #[cfg(target_vendor = "apple")]
    return apple_performance_cores();
    #[allow(unreachable_code)]
    None
}

/// Apple's performance level 0 is the P cores; they come first in its
/// numbering, but threads cannot be pinned there (only QoS asks for them):
/// the count is what matters.
#[cfg(target_vendor = "apple")]
fn apple_performance_cores() -> Option<Vec<usize>> {
    use sysctl::Sysctl;
    let value = |name: &str| sysctl::Ctl::new(name).ok()?.value_string().ok()?.trim().parse::<usize>().ok();
    let (p, all) = (value("hw.perflevel0.physicalcpu")?, value("hw.physicalcpu")?);
    (p > 0 && p < all).then(|| (0..p).collect())
}

/// The cores of all but the slowest cluster, read from a sysfs cpu
/// directory: by `cpu_capacity` (the scheduler's measure, which accounts for
/// the core design) where the kernel gives it, else by
/// `cpufreq/cpuinfo_max_freq`. `None` when all cores are alike or nothing is
/// readable. Offline cores (no value) are left out.
#[cfg(any(target_os = "linux", target_os = "android", test))]
pub(crate) fn fastest_clusters(cpu_dir: &std::path::Path) -> Option<Vec<usize>> {
    let mut ids: Vec<usize> = std::fs::read_dir(cpu_dir)
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("cpu")?.parse().ok())
        .collect();
    ids.sort_unstable();
    let read = |id: usize, file: &str| -> Option<u64> {
        std::fs::read_to_string(cpu_dir.join(format!("cpu{id}")).join(file)).ok()?.trim().parse().ok()
    };
    let speeds =
        |file: &str| -> Vec<(usize, u64)> { ids.iter().filter_map(|&id| Some((id, read(id, file)?))).collect() };
    let mut speed = speeds("cpu_capacity");
    if speed.is_empty() {
        speed = speeds("cpufreq/cpuinfo_max_freq");
    }
    let slowest = speed.iter().map(|&(_, s)| s).min()?;
    let fast: Vec<usize> = speed.iter().filter(|&&(_, s)| s > slowest).map(|&(id, _)| id).collect();
    (!fast.is_empty()).then_some(fast)
}

/// Pins each of the pool's workers to `cores` (all of them: the scheduler
/// still balances among them). False if the OS refused.
fn pin_workers(cores: &[usize]) -> bool {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use nix::sched::{sched_setaffinity, CpuSet};
        use nix::unistd::Pid;
        let mut set = CpuSet::new();
        if cores.iter().any(|&c| set.set(c).is_err()) {
            return false;
        }
        let pool = candle_core::utils::barrier_pool();
        let workers = pool.n_workers();
        let refused = std::sync::atomic::AtomicBool::new(false);
        // Worker ids are 0..workers; the caller runs as id `workers`.
        pool.execute(|id| {
            if id < workers && sched_setaffinity(Pid::from_raw(0), &set).is_err() {
                refused.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        });
        !refused.into_inner()
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = cores;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sysfs cpu directory: per core, `cpu_capacity` and/or max frequency
    /// (`None` leaves the file out).
    fn tree(cores: &[(Option<u64>, Option<u64>)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (i, (capacity, freq)) in cores.iter().enumerate() {
            let cpu = dir.path().join(format!("cpu{i}"));
            std::fs::create_dir_all(cpu.join("cpufreq")).unwrap();
            if let Some(c) = capacity {
                std::fs::write(cpu.join("cpu_capacity"), format!("{c}\n")).unwrap();
            }
            if let Some(f) = freq {
                std::fs::write(cpu.join("cpufreq/cpuinfo_max_freq"), format!("{f}\n")).unwrap();
            }
        }
        // What sysfs has beside the cores.
        for other in ["cpufreq", "cpuidle", "online", "possible"] {
            std::fs::create_dir_all(dir.path().join(other)).unwrap();
        }
        dir
    }

    fn cores(spec: &[(usize, Option<u64>, Option<u64>)]) -> Vec<(Option<u64>, Option<u64>)> {
        spec.iter().flat_map(|&(n, c, f)| std::iter::repeat_n((c, f), n)).collect()
    }

    #[test]
    fn one_three_four_takes_the_prime_and_big_cores() {
        // Little cores first, as phones number them; capacities as an
        // energy-model kernel reports them, frequencies in kHz.
        let t = tree(&cores(&[
            (4, Some(325), Some(1_804_800)),
            (3, Some(870), Some(2_496_000)),
            (1, Some(1024), Some(3_187_200)),
        ]));
        assert_eq!(fastest_clusters(t.path()), Some(vec![4, 5, 6, 7]));
    }

    #[test]
    fn two_six_takes_the_two_big_cores_by_frequency_when_there_is_no_capacity() {
        // Frequencies alone (an older kernel): 2.2 GHz big, 2.0 GHz little.
        let t = tree(&cores(&[(6, None, Some(2_000_000)), (2, None, Some(2_200_000))]));
        assert_eq!(fastest_clusters(t.path()), Some(vec![6, 7]));
    }

    #[test]
    fn capacity_wins_over_frequency() {
        // A little core can clock higher than a big one; the capacity knows.
        let t = tree(&cores(&[(2, Some(1024), Some(2_000_000)), (6, Some(400), Some(2_200_000))]));
        assert_eq!(fastest_clusters(t.path()), Some(vec![0, 1]));
    }

    #[test]
    fn alike_or_unreadable_cores_are_not_restricted() {
        let alike = tree(&cores(&[(8, Some(1024), Some(2_000_000))]));
        assert_eq!(fastest_clusters(alike.path()), None);
        let unreadable = tree(&cores(&[(8, None, None)]));
        assert_eq!(fastest_clusters(unreadable.path()), None);
        assert_eq!(fastest_clusters(std::path::Path::new("/nonexistent")), None);
    }

    /// `Cpus_allowed_list` of each of the pool's workers.
    #[cfg(target_os = "linux")]
    fn worker_cores() -> Vec<String> {
        let mut seen = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if name.starts_with("candle-bp-") {
                let status = std::fs::read_to_string(task.path().join("status")).unwrap();
                let line = status.lines().find(|l| l.starts_with("Cpus_allowed_list:")).unwrap();
                seen.push(line.split_whitespace().nth(1).unwrap().to_string());
            }
        }
        seen
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn workers_are_pinned_to_the_cores_given() {
        let workers = candle_core::utils::barrier_pool().n_workers();
        let all: Vec<usize> = (0..std::thread::available_parallelism().unwrap().get()).collect();
        if workers == 0 || all.len() < 2 {
            return; // one core: nothing to choose between
        }
        assert!(pin_workers(&[1]));
        let pinned = worker_cores();
        // Back to every core before asserting, for the tests sharing the pool.
        assert!(pin_workers(&all));
        assert_eq!(pinned, vec!["1".to_string(); workers]);
    }

    #[test]
    fn offline_cores_are_left_out() {
        // cpu7 (a big core) is offline: no frequency to read.
        let mut c = cores(&[(6, None, Some(1_800_000)), (2, None, Some(2_600_000))]);
        c[7] = (None, None);
        let t = tree(&c);
        assert_eq!(fastest_clusters(t.path()), Some(vec![6]));
    }
}
