//! Temporary outputs that a signal must not leave behind.
//!
//! Every temporary name an output is written under (`.NAME.PID.tmp`, a file or a
//! directory: see [`super::atomic`]) is registered here while it exists. The first
//! registration installs handlers for SIGINT, SIGTERM and SIGHUP (those not ignored when
//! the run started, so `nohup` keeps its meaning): a thread that removes every registered
//! path and then ends the process by the same signal, as if it had no handler, so a shell
//! reports 128 + the signal number and a script running moe-spill stops on Ctrl-C.
//!
//! The work is done on a thread (signal-hook's self-pipe) rather than in the handler,
//! where removing a directory tree is not allowed. Creating, renaming into place and
//! removing a registered path all hold the registry's lock, and the cleanup keeps the
//! lock until the process is gone: a temporary is either registered when the cleanup
//! runs (and removed) or never created, a rename into place either completed (a whole
//! output) or never happens, and no thread of the run gets to report an error or exit
//! while the cleanup is under way.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex, MutexGuard, Once, PoisonError};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// The temporary paths that exist now.
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn live() -> MutexGuard<'static, Vec<PathBuf>> {
    // A thread that panicked while holding the lock left the list itself intact.
    LIVE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A registered temporary file or directory: removed when dropped, unless
/// [`Temp::persist`] moved it into place.
#[derive(Debug)]
pub struct Temp {
    path: PathBuf,
    persisted: bool,
}

impl Temp {
    /// Create the temporary `path` with `create` (a file, a directory) and register it,
    /// both under the lock.
    pub fn create<T>(
        path: PathBuf,
        create: impl FnOnce(&Path) -> io::Result<T>,
    ) -> io::Result<(Temp, T)> {
        install_handlers();
        let mut live = live();
        let made = create(&path)?;
        live.push(path.clone());
        Ok((
            Temp {
                path,
                persisted: false,
            },
            made,
        ))
    }

    /// Register `path`, which a later rename will create (a temporary file that lives
    /// for the whole run, such as kernel-replay's model file), to be removed like one.
    pub fn register(path: PathBuf) -> Temp {
        install_handlers();
        live().push(path.clone());
        Temp {
            path,
            persisted: false,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Move the finished temporary into place with `rename` (given its path) under the
    /// lock; from then on it is the output, not a temporary. On failure it is removed.
    pub fn persist(mut self, rename: impl FnOnce(&Path) -> io::Result<()>) -> io::Result<()> {
        let mut live = live();
        let renamed = rename(&self.path);
        if renamed.is_ok() {
            unregister(&mut live, &self.path);
            self.persisted = true;
        }
        drop(live); // before `self`, whose drop takes the lock to remove a failed one
        renamed
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if self.persisted {
            return;
        }
        let mut live = live();
        remove(&self.path);
        unregister(&mut live, &self.path);
    }
}

fn unregister(live: &mut Vec<PathBuf>, path: &Path) {
    if let Some(i) = live.iter().position(|p| p == path) {
        live.swap_remove(i);
    }
}

/// Remove a temporary file or directory tree, whichever it is.
fn remove(path: &Path) {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            // Another thread may still be adding files to it (the signal does not stop
            // the writer): try again until it is gone.
            for _ in 0..1000 {
                match fs::remove_dir_all(path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => continue,
                    _ => return,
                }
            }
        }
        Ok(_) => {
            let _ = fs::remove_file(path);
        }
        Err(_) => {}
    }
}

/// Whether `sig` was set to be ignored when the run started.
fn ignored(sig: libc::c_int) -> bool {
    // SAFETY: with a null new action, sigaction only reads the current one into `old`.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}

/// Start the cleanup thread, once per process, and return once its handlers are in
/// place (or could not be installed: then a signal acts as it would without them).
fn install_handlers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let (ready, installed) = mpsc::sync_channel(0);
        // The handlers are registered on the thread itself: registered without a thread
        // to act on them, the signals would be swallowed.
        let thread = std::thread::Builder::new()
            .name("cleanup on signal".into())
            .spawn(move || {
                let wanted = [SIGINT, SIGTERM, SIGHUP]
                    .into_iter()
                    .filter(|&s| !ignored(s));
                let signals = Signals::new(wanted);
                let _ = ready.send(());
                if let Some(sig) = signals.ok().and_then(|mut s| s.forever().next()) {
                    clean_up_and_end(sig);
                }
            });
        if thread.is_ok() {
            let _ = installed.recv();
        }
    });
}

/// Remove every registered temporary, then end the process by `sig`.
fn clean_up_and_end(sig: libc::c_int) -> ! {
    // Held until the process is gone: nothing is created or renamed into place meanwhile.
    let live = live();
    for path in live.iter() {
        remove(path);
    }
    // Ends the process by `sig` (it falls back on abort if that fails).
    let _ = signal_hook::low_level::emulate_default_handler(sig);
    std::process::exit(128 + sig)
}
