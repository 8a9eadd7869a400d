//! The process's CPU time, memory and open files, read from `/proc` when `/metrics` is scraped
//! (Linux; elsewhere they are not exported). The names are Prometheus' standard `process_*`
//! ones. Read by hand rather than through the `process` feature of the prometheus crate, which
//! pulls `procfs` and `rustix` into the build for these four numbers.

use prometheus::{Counter, IntGauge, Registry};

pub struct ProcessMetrics {
    cpu_seconds: Counter,
    resident_bytes: IntGauge,
    virtual_bytes: IntGauge,
    open_fds: IntGauge,
}

/// What `/proc/self` says now: (CPU seconds, resident bytes, virtual bytes, open descriptors).
#[cfg(target_os = "linux")]
fn read() -> Option<(f64, i64, i64, i64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name (which may hold spaces) are separated by spaces;
    // utime and stime are the 14th and 15th fields, in clock ticks.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf reads a constant of the system; it has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let cpu = ticks
        / if per_second > 0 {
            per_second as f64
        } else {
            100.0
        };
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib = |key: &str| -> i64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<i64>().ok())
            .unwrap_or(0)
            * 1024
    };
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as i64);
    Some((cpu, kib("VmRSS:"), kib("VmSize:"), fds))
}

#[cfg(not(target_os = "linux"))]
fn read() -> Option<(f64, i64, i64, i64)> {
    None
}

impl ProcessMetrics {
    /// Registers the series where `/proc` can be read; none elsewhere.
    pub fn new(registry: &Registry) -> Option<Self> {
        read()?;
        let metrics = ProcessMetrics {
            cpu_seconds: Counter::new(
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
            )
            .expect("metric definition"),
            resident_bytes: IntGauge::new(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
            )
            .expect("metric definition"),
            virtual_bytes: IntGauge::new(
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
            )
            .expect("metric definition"),
            open_fds: IntGauge::new("process_open_fds", "Number of open file descriptors.")
                .expect("metric definition"),
        };
        registry
            .register(Box::new(metrics.cpu_seconds.clone()))
            .expect("register");
        registry
            .register(Box::new(metrics.resident_bytes.clone()))
            .expect("register");
        registry
            .register(Box::new(metrics.virtual_bytes.clone()))
            .expect("register");
        registry
            .register(Box::new(metrics.open_fds.clone()))
            .expect("register");
        Some(metrics)
    }

    /// Reads `/proc/self` again.
    pub fn refresh(&self) {
        let Some((cpu, resident, virt, fds)) = read() else {
            return;
        };
        let behind = cpu - self.cpu_seconds.get();
        if behind > 0.0 {
            self.cpu_seconds.inc_by(behind);
        }
        self.resident_bytes.set(resident);
        self.virtual_bytes.set(virt);
        self.open_fds.set(fds);
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn the_process_reads_itself() {
        let registry = Registry::new();
        let metrics = ProcessMetrics::new(&registry).expect("/proc is readable on Linux");
        metrics.refresh();
        assert!(
            metrics.resident_bytes.get() > 1024 * 1024,
            "more than a MiB resident"
        );
        assert!(metrics.virtual_bytes.get() >= metrics.resident_bytes.get());
        assert!(
            metrics.open_fds.get() >= 3,
            "stdin, stdout and stderr at least"
        );
        let busy = std::time::Instant::now();
        while busy.elapsed() < std::time::Duration::from_millis(50) {
            std::hint::black_box(busy.elapsed());
        }
        metrics.refresh();
        assert!(metrics.cpu_seconds.get() > 0.0);
    }
}
