//! Standard streams that cannot take output: results are never lost silently, and a
//! stderr that cannot be written never turns a run into a panic.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_moe-spill");

#[test]
fn a_closed_stdout_is_an_error_not_lost_results() {
    let mut c = Command::new(BIN);
    c.args(["simulate", "--cache-experts", "100", "-q"]);
    // SAFETY: close(2) is async-signal-safe.
    unsafe {
        c.pre_exec(|| {
            libc::close(1);
            Ok(())
        });
    }
    let out = c.stderr(Stdio::piped()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("stdout is closed"));
}

#[test]
fn a_full_stderr_keeps_the_exit_status() {
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .stdout(Stdio::null())
            .stderr(File::options().write(true).open("/dev/full").unwrap())
            .status()
            .unwrap()
            .code()
    };
    // Notes on stderr (the embedded default is announced) and a good run: 0.
    assert_eq!(run(&["simulate", "--cache-experts", "100"]), Some(0));
    // A bad input: 2, not a panic's 101.
    assert_eq!(run(&["info", "/nonexistent/trace"]), Some(2));
}
