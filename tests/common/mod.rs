//! What the binary's end-to-end tests share: running moe-spill, and checking a success
//! or a bad input the way every test file means them.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The project folder.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// moe-spill with `args`, run in `dir`.
pub fn run_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_moe-spill"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run moe-spill")
}

/// The stdout of a run that must succeed.
pub fn stdout_of(out: Output, args: &[&str]) -> String {
    assert!(
        out.status.success(),
        "moe-spill {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// A bad input: exit status 2, one printable line on stderr containing every `want`, no
/// panic, nothing on stdout. Returns the line.
pub fn bad_input(out: Output, args: &[&str], want: &[&str]) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(2),
        "moe-spill {args:?}: expected exit 2, stderr: {err}"
    );
    assert_eq!(err.lines().count(), 1, "one line expected, got: {err:?}");
    assert!(
        !err.trim_end().chars().any(char::is_control),
        "control characters in {err:?}"
    );
    for w in want {
        assert!(err.contains(w), "moe-spill {args:?}: `{w}` not in: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
    assert!(out.stdout.is_empty(), "no output on error");
    err
}

/// CSV rows as column -> cell maps.
pub fn csv_rows(text: &str) -> Vec<HashMap<String, String>> {
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let head: Vec<String> = r.headers().unwrap().iter().map(|s| s.to_string()).collect();
    r.records()
        .map(|rec| {
            head.iter()
                .cloned()
                .zip(rec.unwrap().iter().map(|s| s.to_string()))
                .collect()
        })
        .collect()
}

/// The header of a CSV.
pub fn header(text: &str) -> Vec<String> {
    let mut r = csv::Reader::from_reader(text.as_bytes());
    r.headers().unwrap().iter().map(|s| s.to_string()).collect()
}
