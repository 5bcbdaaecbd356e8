//! Thin safe wrappers over the Linux calls kernel-replay needs: fadvise, a read-only
//! shared mapping with madvise and mincore, per-thread fault and I/O counters, and file
//! system facts (type, free room).

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The page size of this machine.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
}

/// posix_fadvise over `[off, off + len)` (len 0 = to the end of the file).
pub fn fadvise(f: &File, off: u64, len: u64, advice: libc::c_int) -> io::Result<()> {
    // SAFETY: plain syscall on a valid descriptor.
    let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), off as i64, len as i64, advice) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(r))
    }
}

/// A read-only shared mapping of a whole file (what llama.cpp makes of a GGUF), by
/// memmap2. Its madvise and mincore stay libc calls on the mapping: memmap2 has no
/// mincore, and the callers pass libc's advice numbers.
pub struct SharedMapping {
    map: memmap2::Mmap,
    page: usize,
}

impl SharedMapping {
    /// `mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0)`.
    pub fn new(f: &File, len: u64) -> io::Result<SharedMapping> {
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty file"));
        }
        // SAFETY: a shared read-only mapping of a file we hold open (memmap2's `map`);
        // the replay's own file, which nothing truncates while it runs.
        let map = unsafe { memmap2::MmapOptions::new().len(len as usize).map(f)? };
        Ok(SharedMapping {
            map,
            page: page_size() as usize,
        })
    }

    /// Bytes mapped.
    pub fn size(&self) -> usize {
        self.map.len()
    }

    /// madvise over the pages covering `[off, off + len)`.
    pub fn madvise(&self, off: u64, len: u64, advice: libc::c_int) -> io::Result<()> {
        let start = (off as usize / self.page) * self.page;
        let end = ((off + len) as usize).min(self.map.len());
        if end <= start {
            return Ok(());
        }
        // SAFETY: the range lies inside our mapping.
        let r = unsafe {
            libc::madvise(
                self.map.as_ptr().add(start) as *mut libc::c_void,
                end - start,
                advice,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Page-cache residency of every page of the file (mincore: bit 0 of each byte).
    pub fn residency(&self, out: &mut Vec<u8>) -> io::Result<()> {
        out.clear();
        out.resize(self.map.len().div_ceil(self.page), 0);
        // SAFETY: `out` has one byte per page of the mapping.
        let r = unsafe {
            libc::mincore(
                self.map.as_ptr() as *mut libc::c_void,
                self.map.len(),
                out.as_mut_ptr() as *mut libc::c_uchar,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Read one byte of every page of `[off, off + len)`, in order: every page is
    /// faulted in if it is not resident and its accessed bit is set.
    #[inline]
    pub fn touch(&self, off: u64, len: u64) -> u64 {
        let end = ((off + len) as usize).min(self.map.len());
        let mut p = off as usize;
        let mut acc = 0u64;
        while p < end {
            // SAFETY: p < len, inside the mapping; a volatile load so it is not elided.
            acc = acc
                .wrapping_add(unsafe { std::ptr::read_volatile(self.map.as_ptr().add(p)) } as u64);
            p = (p / self.page + 1) * self.page;
        }
        acc
    }
}

/// (major, minor) page faults and system CPU time (ns) of the calling thread.
pub fn thread_usage() -> (u64, u64, u64) {
    // SAFETY: getrusage fills the struct we pass.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut ru);
        let sys_ns = ru.ru_stime.tv_sec as u64 * 1_000_000_000 + ru.ru_stime.tv_usec as u64 * 1000;
        (ru.ru_majflt as u64, ru.ru_minflt as u64, sys_ns)
    }
}

/// A procfs file read again and again from offset 0 into a buffer allocated once.
pub struct ProcFile {
    file: File,
    buf: Vec<u8>,
}

impl ProcFile {
    pub fn open(path: &str) -> io::Result<ProcFile> {
        Ok(ProcFile {
            file: File::open(path)?,
            buf: vec![0; 8192],
        })
    }

    /// The number after `key` (a line `key value [kB]`), or None.
    pub fn field(&mut self, key: &str) -> io::Result<Option<u64>> {
        let n = self.file.read_at(&mut self.buf, 0)?;
        let text = &self.buf[..n];
        for line in text.split(|&b| b == b'\n') {
            if let Some(rest) = line.strip_prefix(key.as_bytes()) {
                let digits: Vec<u8> = rest
                    .iter()
                    .copied()
                    .skip_while(|b| !b.is_ascii_digit())
                    .take_while(|b| b.is_ascii_digit())
                    .collect();
                return Ok(std::str::from_utf8(&digits)
                    .ok()
                    .and_then(|s| s.parse().ok()));
            }
        }
        Ok(None)
    }
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path with a NUL byte"))
}

/// The file system type magic of `path` (statfs f_type).
pub fn fs_magic(path: &Path) -> io::Result<i64> {
    let c = cpath(path)?;
    // SAFETY: statfs fills the struct we pass.
    unsafe {
        let mut s: libc::statfs = std::mem::zeroed();
        if libc::statfs(c.as_ptr(), &mut s) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(s.f_type as i64)
    }
}

/// Bytes an unprivileged writer may still use on the file system of `path`.
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    let c = cpath(path)?;
    // SAFETY: statvfs fills the struct we pass.
    unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut s) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(s.f_bavail as u64 * s.f_frsize as u64)
    }
}

/// File systems whose pages live only in memory: nothing is ever read from storage.
pub fn memory_fs_name(magic: i64) -> Option<&'static str> {
    match magic {
        0x0102_1994 => Some("tmpfs"),
        0x8584_58f6 => Some("ramfs"),
        0x6265_6572 => Some("sysfs"),
        0x9fa0 => Some("procfs"),
        _ => None,
    }
}

/// Whether process `pid` exists.
pub fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks existence.
    unsafe { libc::kill(pid, 0) == 0 || *libc::__errno_location() == libc::EPERM }
}

/// `(major, minor)` device numbers of the file system holding `path`.
pub fn dev_of(path: &Path) -> io::Result<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let d = std::fs::metadata(path)?.dev();
    Ok((libc::major(d), libc::minor(d)))
}
