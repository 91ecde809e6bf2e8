//! Yielding to etcd: a backup on a control-plane host competes with etcd and the API
//! server for the CPU (zstd workers) and the disk. At `priority: low` every thread of
//! the process gets nice 10 and the lowest best-effort I/O priority; threads created
//! afterwards (zstd's workers, tokio's blocking pool) inherit both from their creator.

use crate::config::Priority;

/// nice value of `priority: low` (CFS gives a nice-0 task about 10x its weight).
const LOW_NICE: i32 = 10;
/// ioprio_set(2): best-effort class, level 7 (the lowest that still makes progress on a busy disk).
const IOPRIO_CLASS_BE: i32 = 2;
const IOPRIO_CLASS_SHIFT: i32 = 13;
const IOPRIO_WHO_PROCESS: i32 = 1;

/// Applies `priority` to every thread of this process; failures are logged, never fatal.
pub fn apply(priority: Priority) {
    if priority == Priority::Normal {
        return;
    }
    let tasks = match std::fs::read_dir("/proc/self/task") {
        Ok(tasks) => tasks,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list this process's threads; running at normal priority");
            return;
        }
    };
    let ioprio = (IOPRIO_CLASS_BE << IOPRIO_CLASS_SHIFT) | 7;
    for task in tasks.flatten() {
        let Some(tid) = task
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<u32>().ok())
        else {
            continue;
        };
        // SAFETY: plain syscalls on a thread id of this process; no memory is passed.
        let (niced, ioprioed) = unsafe {
            (
                libc::setpriority(libc::PRIO_PROCESS, tid, LOW_NICE),
                libc::syscall(
                    libc::SYS_ioprio_set,
                    IOPRIO_WHO_PROCESS,
                    tid as libc::c_long,
                    ioprio,
                ),
            )
        };
        if niced != 0 || ioprioed != 0 {
            tracing::debug!(tid, error = %std::io::Error::last_os_error(), "could not lower a thread's priority");
        }
    }
    tracing::debug!(
        nice = LOW_NICE,
        "running at low CPU and I/O priority (priority: low)"
    );
}

/// This thread's nice value (for tests).
#[cfg(test)]
fn current_nice() -> i32 {
    // SAFETY: getpriority for the calling thread.
    unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_priority_reaches_existing_and_new_threads() {
        // In a thread of its own, so other tests keep their priority... nice is per
        // thread on Linux, but apply() walks every thread: run it in a child process.
        if std::env::var_os("ETCD_OFFSITE_PRIORITY_CHILD").is_some() {
            apply(Priority::Low);
            assert_eq!(current_nice(), LOW_NICE);
            let spawned = std::thread::spawn(current_nice).join().unwrap();
            assert_eq!(spawned, LOW_NICE);
            return;
        }
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "priority::tests::low_priority_reaches_existing_and_new_threads",
                "--nocapture",
            ])
            .env("ETCD_OFFSITE_PRIORITY_CHILD", "1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
    }
}
