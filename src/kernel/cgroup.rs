//! A memory cgroup of our own, below the one this process runs in: cgroup v1
//! (`memory.limit_in_bytes`) or v2 (`memory.max`). Removed on drop, so also on error and
//! on unwinding; stale ones left by a killed run are removed on the next run.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::sys;
use crate::error::{printable_path, Error, Result};

const PREFIX: &str = "moe-spill-kernel-";

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Version {
    V1,
    V2,
}

/// A child memory cgroup.
#[derive(Debug)]
pub struct MemCgroup {
    pub dir: PathBuf,
    pub version: Version,
    removed: bool,
}

/// The memory cgroup directory of this process and its version.
pub fn own_memory_cgroup() -> Result<(PathBuf, Version)> {
    let cg = fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| Error::io(Path::new("/proc/self/cgroup"), e))?;
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| Error::io(Path::new("/proc/self/mountinfo"), e))?;
    // v1: a line `N:...memory...:/path` and a cgroup mount with the memory option.
    let v1_path = cg.lines().find_map(|l| {
        let mut it = l.splitn(3, ':');
        let (_, ctrl, path) = (it.next()?, it.next()?, it.next()?);
        ctrl.split(',')
            .any(|c| c == "memory")
            .then(|| path.to_string())
    });
    let v2_path = cg
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(|p| p.to_string()));
    for line in mountinfo.lines() {
        // id parent maj:min root mountpoint opts ... - fstype source superopts
        let (pre, post) = match line.split_once(" - ") {
            Some(x) => x,
            None => continue,
        };
        let f: Vec<&str> = pre.split(' ').collect();
        let g: Vec<&str> = post.split(' ').collect();
        if f.len() < 5 || g.len() < 3 {
            continue;
        }
        let (root, mnt) = (f[3], unescape(f[4]));
        match (g[0], &v1_path, &v2_path) {
            ("cgroup", Some(p), _) if g[2].split(',').any(|o| o == "memory") => {
                return Ok((join_cgroup_path(&mnt, root, p), Version::V1));
            }
            _ => {}
        }
    }
    if let Some(p) = &v2_path {
        for line in mountinfo.lines() {
            let Some((pre, post)) = line.split_once(" - ") else {
                continue;
            };
            let f: Vec<&str> = pre.split(' ').collect();
            if post.starts_with("cgroup2 ") && f.len() >= 5 {
                let dir = join_cgroup_path(&unescape(f[4]), f[3], p);
                if dir.join("cgroup.controllers").is_file() {
                    let ctrl =
                        fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
                    if ctrl.split_whitespace().any(|c| c == "memory") {
                        return Ok((dir, Version::V2));
                    }
                }
            }
        }
    }
    Err(Error::new(
        "cannot find a memory cgroup for this process (no cgroup v1 memory hierarchy and no cgroup v2 memory controller in /proc/self/mountinfo)",
    ))
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\134", "\\")
}

fn join_cgroup_path(mnt: &str, root: &str, path: &str) -> PathBuf {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let mut d = PathBuf::from(mnt);
    for c in rel.split('/').filter(|c| !c.is_empty()) {
        d.push(c);
    }
    d
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    fs::write(path, value)
}

impl MemCgroup {
    /// Create `moe-spill-kernel-<pid>-<n>` below this process's memory cgroup.
    pub fn create(n: usize) -> Result<MemCgroup> {
        let (parent, version) = own_memory_cgroup()?;
        remove_stale(&parent);
        let dir = parent.join(format!("{PREFIX}{}-{n}", std::process::id()));
        let _ = fs::remove_dir(&dir);
        fs::create_dir(&dir).map_err(|e| {
            Error::new(format!(
                "cannot create a memory cgroup in {}: {} (kernel-replay needs root or a delegated cgroup)",
                printable_path(&parent),
                io_text(&e)
            ))
        })?;
        let cg = MemCgroup {
            dir,
            version,
            removed: false,
        };
        if version == Version::V2 && !cg.dir.join("memory.max").exists() {
            // Enable the controller for our children; refused while processes sit in
            // the parent (the no-internal-processes rule).
            let r = write(&parent.join("cgroup.subtree_control"), "+memory");
            if r.is_err() || !cg.dir.join("memory.max").exists() {
                return Err(Error::new(format!(
                    "cgroup v2: the memory controller is not enabled below {} and cannot be (run kernel-replay from a cgroup that delegates memory, e.g. `systemd-run --scope -p Delegate=yes moe-spill ...`)",
                    printable_path(&parent)
                )));
            }
        }
        if !cg.limit_file().exists() {
            return Err(Error::new(format!(
                "{}: no {} in the new cgroup",
                printable_path(&cg.dir),
                cg.limit_name()
            )));
        }
        Ok(cg)
    }

    fn limit_name(&self) -> &'static str {
        match self.version {
            Version::V1 => "memory.limit_in_bytes",
            Version::V2 => "memory.max",
        }
    }

    pub fn limit_file(&self) -> PathBuf {
        self.dir.join(self.limit_name())
    }

    pub fn usage_file(&self) -> PathBuf {
        self.dir.join(match self.version {
            Version::V1 => "memory.usage_in_bytes",
            Version::V2 => "memory.current",
        })
    }

    pub fn procs_file(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// A field of memory.stat (v1 names: `cache`, `pgmajfault`, ...; v2: `file`, ...).
    pub fn stat(&self, key: &str) -> Option<u64> {
        let s = fs::read_to_string(self.dir.join("memory.stat")).ok()?;
        s.lines().find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == key).then(|| v.trim().parse().ok()).flatten()
        })
    }

    /// Peak usage (v1 max_usage_in_bytes, v2 memory.peak), if the kernel has it.
    pub fn peak(&self) -> Option<u64> {
        let f = match self.version {
            Version::V1 => "memory.max_usage_in_bytes",
            Version::V2 => "memory.peak",
        };
        fs::read_to_string(self.dir.join(f))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Times the OOM killer fired in this cgroup.
    pub fn oom_kills(&self) -> u64 {
        let (f, key) = match self.version {
            Version::V1 => ("memory.oom_control", "oom_kill "),
            Version::V2 => ("memory.events", "oom_kill "),
        };
        fs::read_to_string(self.dir.join(f))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix(key).and_then(|v| v.trim().parse().ok()))
            })
            .unwrap_or(0)
    }

    /// Remove the cgroup (its processes must have exited). Idempotent.
    pub fn remove(&mut self) -> Result<()> {
        if self.removed {
            return Ok(());
        }
        let mut last = None;
        for _ in 0..100 {
            match fs::remove_dir(&self.dir) {
                Ok(()) => {
                    self.removed = true;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.removed = true;
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
            // A just-reaped process can take a moment to leave the cgroup.
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Err(Error::new(format!(
            "cannot remove cgroup {}: {}",
            printable_path(&self.dir),
            last.map(|e| io_text(&e)).unwrap_or_default()
        )))
    }
}

impl Drop for MemCgroup {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            crate::note!("moe-spill: warning: {e}");
        }
    }
}

fn io_text(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        io::ErrorKind::NotFound => "no such file or directory".into(),
        _ => e.to_string(),
    }
}

/// Remove cgroups of earlier runs whose process is gone (a run killed with SIGKILL).
fn remove_stale(parent: &Path) {
    let Ok(rd) = fs::read_dir(parent) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid: Option<i32> = rest.split('-').next().and_then(|p| p.parse().ok());
        if let Some(pid) = pid {
            if pid != std::process::id() as i32 && !sys::pid_alive(pid) {
                let _ = fs::remove_dir(e.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_paths_join_below_the_mount_root() {
        assert_eq!(
            join_cgroup_path("/sys/fs/cgroup/memory", "/", "/a/b"),
            PathBuf::from("/sys/fs/cgroup/memory/a/b")
        );
        assert_eq!(
            join_cgroup_path("/sys/fs/cgroup", "/a", "/a/b"),
            PathBuf::from("/sys/fs/cgroup/b")
        );
    }
}
