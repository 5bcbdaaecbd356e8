//! Bad trace input through the binary (issue 18, the reader items): a one-line error
//! naming the file and line or byte, exit status 2, no panic, nothing written.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use moe_spill::format::binary;
use moe_spill::trace::{Geometry, Trace};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_moe-spill"))
        .args(args)
        .output()
        .expect("run moe-spill")
}

fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "moe-spill {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Exit status 2, one printable line on stderr containing `want`, nothing on stdout.
fn fails(args: &[&str], want: &str) -> String {
    let out = run(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "moe-spill {args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "one line expected, got: {err:?}");
    assert!(
        !err.trim_end().chars().any(char::is_control),
        "control characters in {err:?}"
    );
    assert!(err.contains(want), "`{err}` does not contain `{want}`");
    assert!(!err.contains("panicked"), "{err}");
    assert!(out.stdout.is_empty(), "no output on error");
    err
}

fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, bytes).unwrap();
    p
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A .mst with a good checksum, written from a trace built by hand.
fn mst(dir: &Path, name: &str, layers: Vec<u16>, ids: Vec<u16>) -> PathBuf {
    let geometry = Geometry {
        layers,
        n_experts: 4,
        top_k: 2,
    };
    let n = ids.len() / geometry.accesses_per_token();
    let t = Trace {
        geometry,
        n_experts_known: true,
        ids: ids.into(),
        response_starts: vec![0, n],
        prompt: vec![false; n],
    };
    let mut bytes = Vec::new();
    binary::write(&t, &mut bytes).unwrap();
    write(dir, name, bytes)
}

// Item 7: the binary reader makes the text readers' checks.
#[test]
fn mst_repeated_expert_or_layer_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let good = mst(
        d.path(),
        "good.mst",
        vec![1, 2],
        vec![3, 0, 5, 6, 2, 1, 4, 7],
    );
    ok(&["info", s(&good)]);
    // Token 1, layer 2: expert 3 twice (dense id 7 at id index 6 and 7).
    let dup = mst(
        d.path(),
        "dup.mst",
        vec![1, 2],
        vec![3, 0, 5, 6, 2, 1, 7, 7],
    );
    // ids start at 40 + 4 (layers) + 4 (lengths) + 1 (phase bits) = 49.
    fails(
        &["info", s(&dup)],
        "dup.mst: byte 63: expert 3 of layer 2 appears twice in one token",
    );
    let out = d.path().join("dup_text");
    fails(&["convert", s(&dup), "-o", s(&out)], "appears twice");
    assert!(!out.exists());
    let layers = mst(d.path(), "layers.mst", vec![5, 5], vec![3, 0, 5, 6]);
    fails(
        &["info", s(&layers)],
        "layers.mst: byte 42: layer 5 appears twice in the layer numbers",
    );
}
