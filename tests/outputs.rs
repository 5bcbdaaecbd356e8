//! `-o` onto what is not a plain new file: inputs are refused, symlinks followed,
//! permissions kept, FIFOs written through, the extension picks JSON or binary.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_moe-spill");

fn run(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn sweep_to(dir: &std::path::Path, out: &str) -> Output {
    run(
        dir,
        &[
            "sweep",
            "t.txt",
            "--cache-experts",
            "0..50",
            "--points",
            "2",
            "-q",
            "-o",
            out,
        ],
    )
}

/// A scratch directory holding the sample trace as `t.txt` (returned with its bytes).
fn scratch_with_trace() -> (tempfile::TempDir, Vec<u8>) {
    let d = tempfile::tempdir().unwrap();
    let trace = std::fs::read("traces/sample/single_response_003.txt").unwrap();
    std::fs::write(d.path().join("t.txt"), &trace).unwrap();
    (d, trace)
}

/// The first hardware preset as a profile file `hw.json` in `dir`.
fn write_hw_profile(dir: &std::path::Path) {
    let hw = run(dir, &["hardware", "--format", "json"]);
    let list: serde_json::Value = serde_json::from_slice(&hw.stdout).unwrap();
    std::fs::write(dir.join("hw.json"), list[0].to_string()).unwrap();
}

#[test]
fn outputs_that_are_not_plain_new_files() {
    let (d, trace) = scratch_with_trace();
    let dir = d.path();
    // The input itself: refused, untouched.
    let out = sweep_to(dir, "t.txt");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is one of the inputs"));
    assert_eq!(std::fs::read(dir.join("t.txt")).unwrap(), trace);
    let out = run(dir, &["convert", "t.txt", "-q", "-o", "t.txt"]);
    assert_eq!(out.status.code(), Some(2));
    // A symlink: its target is written, the link and the target's mode stay.
    std::fs::write(dir.join("real.csv"), "old").unwrap();
    std::fs::set_permissions(dir.join("real.csv"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::symlink("real.csv", dir.join("link.csv")).unwrap();
    assert!(sweep_to(dir, "link.csv").status.success());
    assert!(std::fs::symlink_metadata(dir.join("link.csv"))
        .unwrap()
        .file_type()
        .is_symlink());
    let m = std::fs::metadata(dir.join("real.csv")).unwrap();
    assert_eq!(m.permissions().mode() & 0o777, 0o640);
    assert!(std::fs::read_to_string(dir.join("real.csv"))
        .unwrap()
        .starts_with("trace,"));
    // A FIFO: written through, still a FIFO.
    let fifo = dir.join("ff");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read_to_string(fifo).unwrap())
    };
    assert!(sweep_to(dir, "ff").status.success());
    assert!(reader.join().unwrap().starts_with("trace,"));
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    // Extensions: .json gets JSON; .MST is the binary format, whatever its case.
    assert!(sweep_to(dir, "r.json").status.success());
    assert!(std::fs::read_to_string(dir.join("r.json"))
        .unwrap()
        .starts_with('['));
    assert!(run(dir, &["convert", "t.txt", "-q", "-o", "OUT.MST"])
        .status
        .success());
    assert!(dir.join("OUT.MST").is_file());
    // A file in a directory that takes no new file (written beside, then renamed): the
    // directory is the reason, not the file that is there.
    let out = sweep_to(dir, "/proc/version");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "moe-spill: /proc/version: cannot create a file in /proc to write it: no such file or directory"
    );
}

/// Every file a command reads is spared by `-o`, not only the traces named: a trace
/// inside an input directory (and any new file there, which the next run would read as
/// a trace), each part of a GGUF, the pin profile, a hardware profile file.
#[test]
fn outputs_never_overwrite_an_input() {
    let (d, trace) = scratch_with_trace();
    let dir = d.path();
    std::fs::create_dir(dir.join("d")).unwrap();
    std::fs::write(dir.join("d/a.txt"), &trace).unwrap();
    write_hw_profile(dir);
    for name in ["m-00001-of-00002.gguf", "m-00002-of-00002.gguf"] {
        std::fs::write(dir.join(name), b"GGUF model part").unwrap();
    }
    let refused = |args: &[&str], out: &str, why: &str| {
        let before = std::fs::read(dir.join(out)).ok();
        let mut all = args.to_vec();
        all.extend(["-q", "-o", out]);
        let o = run(dir, &all);
        assert_eq!(o.status.code(), Some(2), "{all:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(why), "{all:?}: {err}");
        assert_eq!(std::fs::read(dir.join(out)).ok(), before, "{all:?}");
    };
    let sweep = ["sweep", "--cache-experts", "0..50", "--points", "2"];
    let with = |more: &[&'static str]| [&sweep[..], more].concat();
    refused(&with(&["d"]), "d/a.txt", "is one of the inputs");
    let next = "would be read as a trace of the input directory d next time";
    refused(&with(&["d"]), "d/new.csv", next);
    refused(&["convert", "d"], "d/b.mst", next);
    // A trace of the directory that links elsewhere, and a link to a new trace in it.
    std::fs::create_dir(dir.join("e")).unwrap();
    std::os::unix::fs::symlink(dir.join("t.txt"), dir.join("e/l.txt")).unwrap();
    refused(&with(&["e"]), "t.txt", "is one of the inputs");
    std::os::unix::fs::symlink("d/later.csv", dir.join("to_d.csv")).unwrap();
    refused(&with(&["d"]), "to_d.csv", next);
    // A link into a directory that is not there: refused before the work.
    std::os::unix::fs::symlink("nowhere/x.csv", dir.join("dangling.csv")).unwrap();
    refused(
        &with(&["t.txt"]),
        "dangling.csv",
        "leads into nowhere, which is not a directory",
    );
    // What the directory's next run does not read is allowed: a subdirectory, a hidden
    // file, another extension.
    std::fs::create_dir(dir.join("d/res")).unwrap();
    for ok in ["d/res/x.csv", "d/.x.csv", "d/x.json"] {
        let mut all = with(&["d"]);
        all.extend(["-q", "-o", ok]);
        assert!(run(dir, &all).status.success(), "{ok}");
    }
    refused(
        &with(&["t.txt", "--gguf", "m-00001-of-00002.gguf"]),
        "m-00002-of-00002.gguf",
        "is one of the inputs",
    );
    refused(
        &with(&[
            "t.txt",
            "--policies",
            "pin-hot:5",
            "--pin-profile",
            "d/a.txt",
        ]),
        "d/a.txt",
        "is one of the inputs",
    );
    refused(
        &with(&["t.txt", "--hw", "hw.json"]),
        "hw.json",
        "is one of the inputs",
    );
    // A pin profile no policy uses is a mistake, said before the work.
    let o = run(
        dir,
        &["simulate", "t.txt", "--pin-profile", "nowhere.mst", "-q"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr)
        .contains("nowhere.mst: --pin-profile is for pin-hot policies, and none runs here"));
}

/// `simulate`, `analyze` and `estimate` take `-o` as `sweep` does: the same text as on
/// stdout (the format from the extension), inputs spared; `-o -` is stdout.
#[test]
fn every_results_command_takes_o() {
    let (d, _) = scratch_with_trace();
    let dir = d.path();
    write_hw_profile(dir);
    let commands: [&[&str]; 4] = [
        &["simulate", "t.txt", "--cache-experts", "50"],
        &["analyze", "t.txt", "--chunk", "16"],
        &["estimate", "--u", "3000", "--d", "500", "--hw", "hw.json"],
        &[
            "sweep",
            "t.txt",
            "--cache-experts",
            "0..50",
            "--points",
            "2",
        ],
    ];
    for args in commands {
        for (ext, format) in [("csv", "csv"), ("json", "json"), ("txt", "table")] {
            let stdout = run(dir, &[args, &["-q", "--format", format]].concat());
            assert!(stdout.status.success(), "{args:?}");
            let name = format!("r.{ext}");
            let o = run(dir, &[args, &["-q", "-o", &name]].concat());
            assert!(o.status.success(), "{args:?} -o {name}");
            assert!(o.stdout.is_empty() && o.stderr.is_empty(), "{args:?}");
            assert_eq!(std::fs::read(dir.join(&name)).unwrap(), stdout.stdout);
            let dash = run(
                dir,
                &[args, &["-q", "--format", format, "-o", "-"]].concat(),
            );
            assert_eq!(dash.stdout, stdout.stdout, "{args:?} -o -");
        }
        // Without -q the note names the file.
        let o = run(dir, &[args, &["-o", "n.csv"]].concat());
        assert!(String::from_utf8_lossy(&o.stderr).contains("wrote n.csv ("));
    }
    assert!(!dir.join("-").exists());
    // A trace has no stdout form: `-o -` is refused, not a directory named `-`.
    let golden = format!("{}/traces/golden", env!("CARGO_MANIFEST_DIR"));
    for args in [
        &["convert", &golden, "-o", "-"][..],
        &["synth", "--model", "glm-5", "--tokens", "4", "-o", "-"][..],
    ] {
        let o = run(dir, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("-o -: a trace is written to FILE.mst"));
        assert!(!dir.join("-").exists());
    }
    for (args, input) in [
        (&["simulate", "t.txt", "--cache-experts", "5"][..], "t.txt"),
        (&["analyze", "t.txt", "--chunk", "16"][..], "t.txt"),
        (
            &["estimate", "--u", "3000", "--d", "500", "--hw", "hw.json"][..],
            "hw.json",
        ),
    ] {
        let before = std::fs::read(dir.join(input)).unwrap();
        let o = run(dir, &[args, &["-q", "-o", input]].concat());
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("is one of the inputs"));
        assert_eq!(std::fs::read(dir.join(input)).unwrap(), before);
        let o = run(dir, &[args, &["-q", "-o", "."]].concat());
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("is a directory"));
        let o = run(dir, &[args, &["-q", "-o", "new/"]].concat());
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("new/: names a directory"));
        assert!(!dir.join("new").exists());
    }
}

/// A trace written as forum files says it made a directory, and how to get one file
/// where the name looks like a file's.
#[test]
fn a_directory_of_forum_files_is_named_as_one() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let root = env!("CARGO_MANIFEST_DIR");
    let golden = format!("{root}/traces/golden");
    for (out, want) in [
        ("out.txt", "wrote directory out.txt (3 responses, 810 tokens, 12960 accesses; 3 forum-format files single_response_NNN.txt; a name ending in .mst writes one binary file)\n"),
        ("plain", "wrote directory plain (3 responses, 810 tokens, 12960 accesses; 3 forum-format files single_response_NNN.txt)\n"),
        ("one.mst", "wrote one.mst (3 responses, 810 tokens, 12960 accesses)\n"),
    ] {
        let o = run(dir, &["convert", &golden, "-o", out]);
        assert!(o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want), "{err}");
        assert_eq!(dir.join(out).is_dir(), !out.ends_with(".mst"));
    }
}
