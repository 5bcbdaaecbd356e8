//! Notes on stderr, held until the command's checks have passed: a run that ends in an
//! error prints that one line alone, not the notes that came before it (the default
//! trace, the profile's RAM). They go out when the work starts (a progress bar) or when
//! the command succeeds; after that a note is printed at once.

use std::io::Write as _;
use std::sync::Mutex;

/// Notes not yet printed; `None` once they go out as they come.
static HELD: Mutex<Option<Vec<String>>> = Mutex::new(Some(Vec::new()));

/// Every note given so far: one said twice (a sweep's note per VRAM size) goes out once.
static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Print `line` (once the checks have passed) or hold it until they have; a line
/// already given is dropped.
pub fn note(line: String) {
    {
        let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
        if seen.contains(&line) {
            return;
        }
        seen.push(line.clone());
    }
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    match held.as_mut() {
        Some(lines) => lines.push(line),
        None => print(&line),
    }
}

/// The checks have passed: print the held notes and every later one at once.
pub fn release() {
    let lines = HELD.lock().unwrap_or_else(|e| e.into_inner()).take();
    for line in lines.into_iter().flatten() {
        print(&line);
    }
}

/// The command failed before its work: the error is the one line to print.
pub fn drop_held() {
    if let Some(lines) = HELD.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        lines.clear();
    }
}

/// A line on stderr that never fails the run: a note is not worth a panic when stderr
/// cannot be written (`2>/dev/full`, a closed pipe).
pub fn print(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// `items` in order, each once: one named twice would give the same rows twice, which a
/// note says (`flag` names the option).
pub fn once<T: std::fmt::Display>(items: Vec<T>, flag: &str, quiet: bool) -> Vec<T> {
    let mut unique: Vec<T> = Vec::with_capacity(items.len());
    for item in items {
        if unique.iter().any(|u| u.to_string() == item.to_string()) {
            if !quiet {
                note(format!(
                    "moe-spill: note: {flag} names {item} more than once; it runs once"
                ));
            }
        } else {
            unique.push(item);
        }
    }
    unique
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test touches the process-wide state, so no other can interleave with it.
    #[test]
    fn notes_wait_for_release_and_drop_held_forgets_them() {
        note("one".into());
        drop_held();
        assert_eq!(HELD.lock().unwrap().as_ref().map(Vec::len), Some(0));
        note("two".into());
        // The same note again is dropped.
        note("two".into());
        assert_eq!(HELD.lock().unwrap().as_ref().map(Vec::len), Some(1));
        release();
        assert!(HELD.lock().unwrap().is_none());
        // After the release nothing is held; dropping is a no-op.
        note("three".into());
        drop_held();
        assert!(HELD.lock().unwrap().is_none());
    }
}
