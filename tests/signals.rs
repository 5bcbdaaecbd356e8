//! A signal (SIGINT, SIGTERM, SIGHUP) while an output is written: the temporary
//! `.NAME.PID.tmp` file or folder is removed, the target is neither created nor changed,
//! and the run ends by that signal (a shell reports 128 + its number). A signal that was
//! ignored when the run started (`nohup`) stays ignored.

use std::fs;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_moe-spill");

/// The temporary names in `dir`.
fn temps(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

/// Run `args` in `dir` and send `sig` as soon as a temporary output appears there; how
/// the run ended. `ignore`: start the run with `sig` ignored, as `nohup` does.
fn interrupt(dir: &Path, args: &[&str], sig: i32, ignore: bool) -> ExitStatus {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // The child starts with `sig` ignored (`nohup`) or at its default, whatever this
    // test process inherited: under `nohup cargo test` SIGHUP would be ignored throughout.
    let disposition = if ignore { libc::SIG_IGN } else { libc::SIG_DFL };
    // SAFETY: signal() is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            libc::signal(sig, disposition);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let start = Instant::now();
    while temps(dir).is_empty() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("moe-spill {args:?} ended ({status}) before a temporary output appeared");
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "no temporary output"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    // SAFETY: a signal to our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
    child.wait().unwrap()
}

/// `synth` of a GLM-5 trace of 4 responses x `tokens` tokens to `out` (in `dir`).
fn synth(tokens: &str, out: &str) -> Vec<String> {
    let args = [
        "synth",
        "--model",
        "glm-5",
        "--responses",
        "4",
        "--tokens",
        tokens,
        "-q",
        "-o",
        out,
    ];
    args.map(String::from).to_vec()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A trace for `convert` to write as a folder of text (a few seconds of writing).
fn trace_to_convert(dir: &Path) {
    let made = Command::new(BIN)
        .args(synth("4000", "in.mst"))
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(made.success());
}

#[test]
fn sigterm_while_writing_a_file_leaves_the_target_as_it_was() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    fs::write(dir.join("t.mst"), "old").unwrap();
    let args = synth("30000", "t.mst");
    let status = interrupt(dir, &strs(&args), libc::SIGTERM, false);
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status}");
    assert_eq!(temps(dir), Vec::<String>::new());
    assert_eq!(fs::read(dir.join("t.mst")).unwrap(), b"old");
}

#[test]
fn sigint_or_sighup_while_filling_a_folder_leaves_no_folder() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let args = synth("4000", "text");
    let status = interrupt(dir, &strs(&args), libc::SIGHUP, false);
    assert_eq!(status.signal(), Some(libc::SIGHUP), "{status}");
    assert_eq!(temps(dir), Vec::<String>::new());
    assert!(!dir.join("text").exists());
    trace_to_convert(dir);
    let status = interrupt(
        dir,
        &["convert", "in.mst", "-q", "-o", "out"],
        libc::SIGINT,
        false,
    );
    assert_eq!(status.signal(), Some(libc::SIGINT), "{status}");
    assert_eq!(temps(dir), Vec::<String>::new());
    assert!(!dir.join("out").exists());
}

#[test]
fn an_ignored_signal_stays_ignored() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    trace_to_convert(dir);
    let status = interrupt(
        dir,
        &["convert", "in.mst", "-q", "-o", "out"],
        libc::SIGHUP,
        true,
    );
    assert!(status.success(), "{status}");
    assert_eq!(temps(dir), Vec::<String>::new());
    assert_eq!(fs::read_dir(dir.join("out")).unwrap().count(), 4);
}
