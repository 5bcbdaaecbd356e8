//! Bad trace input through the binary (issue 18, the reader items): a one-line error
//! naming the file and line or byte, exit status 2, no panic, nothing written.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use moe_spill::format::binary;
use moe_spill::trace::{Geometry, Trace};

mod common;

fn run(args: &[&str]) -> Output {
    common::run_in(&common::root(), args)
}

fn ok(args: &[&str]) -> String {
    common::stdout_of(run(args), args)
}

/// Exit status 2, one printable line on stderr containing `want`, nothing on stdout.
fn fails(args: &[&str], want: &str) -> String {
    common::bad_input(run(args), args, &[want])
}

fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, bytes).unwrap();
    p
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const CSV_HEADER: &str = "Layer ID,Batch Number,Token,Activated Expert IDs\n";

/// A CSV of `n_layers` layers (1..), two tokens each, top-2, the first row's experts
/// given.
fn csv_with(n_layers: u16, first: &str) -> String {
    let mut text = CSV_HEADER.to_string();
    for l in 1..=n_layers {
        let a = if l == 1 { first } else { "0, 1" };
        text += &format!("{l},0,a,\"[{a}]\"\n{l},0,b,\"[2, 3]\"\n");
    }
    text
}

// Item 1: the largest expert id wrapped the u16 expert count to 0.
#[test]
fn expert_id_65535_is_refused_with_the_limit() {
    let d = tempfile::tempdir().unwrap();
    let e = write(
        d.path(),
        "e.txt",
        "layer 0 expert 65535\nlayer 0 expert 1\n---token---\n",
    );
    fails(
        &["info", s(&e)],
        "e.txt:1: expert id 65535 is out of range: expert ids run from 0 to 65534",
    );
    let out = d.path().join("e.mst");
    fails(
        &["convert", s(&e), "-o", s(&out)],
        "e.txt:1: expert id 65535",
    );
    assert!(!out.exists(), "no output written");
    // 26 layers with id 65535 divided by zero in trace.rs.
    let c = write(d.path(), "c.csv", csv_with(26, "65535, 1"));
    fails(&["info", s(&c)], "c.csv:2: expert id 65535 is out of range");
    // The largest id that fits still loads (one layer of 65535 experts).
    let top = write(
        d.path(),
        "top.txt",
        "layer 0 expert 65534\nlayer 0 expert 1\n---token---\n",
    );
    assert!(ok(&["info", s(&top), "--format", "csv"]).contains("65535 experts"));
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

// Item 9: numbers too large are out of range, not syntax.
#[test]
fn out_of_range_numbers_name_the_limit() {
    let d = tempfile::tempdir().unwrap();
    let t = write(
        d.path(),
        "t.txt",
        "layer 0 expert 1\nlayer 0 expert 65536\n---token---\n",
    );
    fails(
        &["info", s(&t)],
        "t.txt:2: expert id 65536 is out of range: expert ids run from 0 to 65534",
    );
    let t = write(d.path(), "l.txt", "layer 70000 expert 1\n");
    fails(
        &["info", s(&t)],
        "l.txt:1: layer 70000 is out of range: layer numbers run from 0 to 65535",
    );
    let t = write(
        d.path(),
        "big.txt",
        "layer 1 expert 123456789012345678901234\n",
    );
    fails(
        &["info", s(&t)],
        "expert id 123456789012345678901234 is out",
    );
    for (id, want) in [("70000", "expert id 70000"), ("-6", "expert id -6")] {
        let c = write(d.path(), "c.csv", csv_with(1, &format!("1, {id}")));
        fails(
            &["info", s(&c)],
            &format!("c.csv:2: {want} is out of range: expert ids run from 0 to 65534"),
        );
    }
    let c = write(
        d.path(),
        "l.csv",
        format!("{CSV_HEADER}70000,0,a,\"[1, 2]\"\n"),
    );
    fails(&["info", s(&c)], "l.csv:2: layer 70000 is out of range");
    let c = write(d.path(), "x.csv", csv_with(1, "1, x"));
    fails(
        &["info", s(&c)],
        "x.csv:2: Activated Expert IDs `[1, x]` is not a list",
    );
}

// Item 10: a byte-order mark is not content; control characters are escaped.
#[test]
fn byte_order_mark_is_accepted_and_control_characters_escaped() {
    let d = tempfile::tempdir().unwrap();
    let text = "layer 1 expert 2\nlayer 1 expert 0\n---token---\n";
    let plain = write(d.path(), "plain.txt", text);
    let bom = write(d.path(), "bom.txt", format!("\u{feff}{text}"));
    assert_eq!(
        ok(&["analyze", s(&plain), "--chunk", "1", "--format", "csv"]),
        ok(&["analyze", s(&bom), "--chunk", "1", "--format", "csv"])
    );
    let cr = write(d.path(), "cr.txt", "layer 1 expert 2\nlayer 1\rexpert 0\n");
    fails(
        &["info", s(&cr)],
        r"cr.txt:2: words must be separated by single spaces (`layer L expert E`), found `layer 1\rexpert 0`",
    );
    let cr = write(
        d.path(),
        "cr2.txt",
        "layer 1 expert 2
hello\rworld\r\n",
    );
    fails(
        &["info", s(&cr)],
        r"cr2.txt:2: expected `layer L expert E`, a `---token` separator or a prompt-block marker, found `hello\rworld`",
    );
    let nul = write(
        d.path(),
        "nul.txt",
        "layer 1 expert 2\nlayer 1 expert\0 0\n",
    );
    fails(&["info", s(&nul)], r"found `layer 1 expert\u{0} 0`");
}

// Item 11: the CSV header is checked, not assumed.
#[test]
fn csv_header_names_what_is_wrong() {
    let d = tempfile::tempdir().unwrap();
    let rows = "1,0,a,\"[1, 2]\"\n";
    let c = write(
        d.path(),
        "r.csv",
        format!("Layer ID,Token,Batch Number,Activated Expert IDs\n{rows}"),
    );
    fails(
        &["info", s(&c)],
        "r.csv:1: header columns are out of order: the header must be `Layer ID,Batch Number,Token,Activated Expert IDs`",
    );
    let c = write(
        d.path(),
        "n.csv",
        format!("Layer ID,Batch Number,Tokens,Activated Expert IDs\n{rows}"),
    );
    fails(
        &["info", s(&c)],
        "n.csv:1: header column 3 is `Tokens`, expected `Token`",
    );
    let c = write(
        d.path(),
        "w.csv",
        format!("Layer ID,Batch Number,Token,Activated Expert IDs,Extra\n{rows}"),
    );
    fails(
        &["info", s(&c)],
        "w.csv:1: header has 5 columns, expected the 4",
    );
    // A byte-order mark before the header is still fine.
    let c = write(d.path(), "b.csv", format!("\u{feff}{CSV_HEADER}{rows}"));
    ok(&["info", s(&c)]);
}

/// CRLF line ends (the DeepSeek recording's) number the lines as LF ends do, including
/// past a blank line and for a short row.
#[test]
fn csv_lines_are_numbered_alike_with_crlf() {
    let d = tempfile::tempdir().unwrap();
    for (end, name) in [("\n", "lf.csv"), ("\r\n", "crlf.csv")] {
        let body = [
            "1,0,0,\"[1, 2]\"",
            "",
            "1,0,1,\"[1, 2]\"",
            "1,0,2,\"[1, x]\"",
        ]
        .join(end);
        let c = write(
            d.path(),
            name,
            format!("{}{end}{body}{end}", CSV_HEADER.trim_end()),
        );
        fails(
            &["info", s(&c)],
            &format!("{name}:5: Activated Expert IDs `[1, x]`"),
        );
        let short = format!(
            "{}{end}1,0,0,\"[1, 2]\"{end}1,0,2{end}",
            CSV_HEADER.trim_end()
        );
        let c = write(d.path(), name, short);
        fails(
            &["info", s(&c)],
            &format!("{name}:3: expected 4 fields, found 3"),
        );
    }
}

// Item 13: a dangling link is an error; tabs get their line, whatever line they are on.
#[cfg(unix)]
#[test]
fn dangling_link_in_a_trace_folder_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "a.txt",
        "layer 1 expert 2\nlayer 1 expert 0\n---token---\n",
    );
    std::os::unix::fs::symlink(d.path().join("gone.txt"), d.path().join("b.txt")).unwrap();
    fails(
        &["info", s(d.path())],
        "b.txt: symbolic link to a file that does not exist",
    );
}

#[test]
fn tabs_between_words_are_reported_at_their_line() {
    let d = tempfile::tempdir().unwrap();
    let all = write(
        d.path(),
        "all.txt",
        "layer\t1\texpert\t2\nlayer\t1\texpert\t0\n---token---\n",
    );
    fails(
        &["info", s(&all)],
        r"all.txt:1: words must be separated by single spaces (`layer L expert E`), found `layer\t1\texpert\t2`",
    );
    let one = write(
        d.path(),
        "one.txt",
        "layer 1 expert 2\nlayer 1  expert 0\n---token---\n",
    );
    fails(
        &["info", s(&one)],
        "one.txt:2: words must be separated by single spaces",
    );
}

// Paths are echoed escaped, as line contents are: a file name cannot break the one-line
// message or send escape sequences to the terminal.
#[test]
fn control_characters_in_file_names_are_escaped() {
    let d = tempfile::tempdir().unwrap();
    let name = "new\nline\x1b[31mred\t.txt";
    let shown = r"new\nline\u{1b}[31mred\t.txt";
    let bad = write(d.path(), name, "layer 1 expert 2\nhello\n");
    fails(
        &["info", s(&bad)],
        &format!("{shown}:2: expected `layer L expert E`"),
    );
    let missing = d.path().join("gone\r\n\x07x");
    fails(
        &["info", s(&missing)],
        r"gone\r\n\u{7}x: no such file or directory",
    );
    // In a folder, a file's name reaches the message through the folder listing.
    let sub = d.path().join("dir");
    fs::create_dir(&sub).unwrap();
    write(&sub, "a_1.txt", "layer 1 expert 2\n---token---\n");
    write(
        &sub,
        "a_2\x1b]0;title\x07.txt",
        "layer 2 expert 2\n---token---\n",
    );
    fails(
        &["info", s(&sub)],
        r"a_2\u{1b}]0;title\u{7}.txt:1: layer 2 where layer 1 was expected",
    );
    // Notes name paths too: `wrote PATH` after a conversion.
    let good = write(d.path(), "good.txt", "layer 1 expert 2\n---token---\n");
    let out = d.path().join("out\n\x1b[2J.mst");
    let conv = run(&["convert", s(&good), "-o", s(&out)]);
    assert!(conv.status.success());
    let err = String::from_utf8_lossy(&conv.stderr);
    assert!(err.contains(r"out\n\u{1b}[2J.mst"), "{err:?}");
    assert!(!err.trim_end().chars().any(char::is_control), "{err:?}");
}

/// A DeepSeek-V2-Lite trace (MoE layers 1..=26, top-6) of `tokens` tokens as MoE-Beyond
/// CSV, with `bad` (layer, token) routed to expert 99 (the model has 64).
fn dsv2_csv(tokens: usize, bad: Option<(u16, usize)>) -> String {
    let mut text = CSV_HEADER.to_string();
    for l in 1..=26u16 {
        for t in 0..tokens {
            let third = if bad == Some((l, t)) { 99 } else { 2 };
            text += &format!("{l},0,t{t},\"[0, 1, {third}, 3, 4, 5]\"\n");
        }
    }
    text
}

/// The same trace as forum text.
fn dsv2_text(tokens: usize, bad: Option<(u16, usize)>) -> String {
    let mut text = String::new();
    for t in 0..tokens {
        for l in 1..=26u16 {
            for e in 0..6 {
                let e = if e == 2 && bad == Some((l, t)) { 99 } else { e };
                text += &format!("layer {l} expert {e}\n");
            }
        }
        text += "---token---\n";
    }
    text
}

/// The same trace as .mst, its expert count observed (largest id + 1) or, with `known`,
/// the one given.
fn dsv2_mst(tokens: usize, bad: Option<(u16, usize)>, known: Option<u16>) -> Vec<u8> {
    let n_experts = known.unwrap_or(if bad.is_some() { 100 } else { 6 });
    let geometry = Geometry {
        layers: (1..=26).collect(),
        n_experts,
        top_k: 6,
    };
    let mut ids = Vec::new();
    for t in 0..tokens {
        for l in 1..=26u16 {
            for e in 0..6u16 {
                let e = if e == 2 && bad == Some((l, t)) { 99 } else { e };
                ids.push((l - 1) * n_experts + e);
            }
        }
    }
    let t = Trace {
        geometry,
        n_experts_known: known.is_some(),
        ids: ids.into(),
        response_starts: vec![0, tokens],
        prompt: vec![false; tokens],
    };
    let mut bytes = Vec::new();
    binary::write(&t, &mut bytes).unwrap();
    bytes
}

const DSV2: &str = "is out of range for deepseek-v2-lite (64 experts per layer)";

// Item 8: an expert the chosen model does not have is reported at its file and line
// (byte offset and token in a .mst), also among many files.
#[test]
fn expert_outside_the_model_names_file_and_line() {
    let d = tempfile::tempdir().unwrap();
    let (csv, text, mst) = (
        d.path().join("csv"),
        d.path().join("text"),
        d.path().join("mst"),
    );
    for dir in [&csv, &text, &mst] {
        fs::create_dir(dir).unwrap();
    }
    // Layer 5, token 1 of file 17 of 40: CSV line 1 + 4 * 3 + 1 + 1, text line
    // 1 * 157 + 4 * 6 + 2 + 1, id 1 * 156 + 4 * 6 + 2 at byte 40 + 52 + 4 + 1 + 2 * 182.
    let bad = |i: usize| (i == 17).then_some((5, 1));
    for i in 1..=40 {
        write(&csv, &format!("p_{i}.csv"), dsv2_csv(3, bad(i)));
        write(&text, &format!("p_{i}.txt"), dsv2_text(3, bad(i)));
        write(&mst, &format!("p_{i}.mst"), dsv2_mst(3, bad(i), None));
    }
    let model = ["--model", "deepseek-v2-lite"];
    fn info<'a>(dir: &'a Path, model: &[&'a str]) -> Vec<&'a str> {
        [&["info", s(dir)][..], model].concat()
    }
    fails(
        &info(&csv, &model),
        &format!("p_17.csv:15: expert 99 {DSV2}"),
    );
    fails(
        &info(&text, &model),
        &format!("p_17.txt:184: expert 99 {DSV2}"),
    );
    fails(
        &info(&mst, &model),
        &format!("p_17.mst: byte 461: token 1, layer 5: expert 99 {DSV2}"),
    );
    // Without the bad file the folders load as the model.
    for dir in [&csv, &text, &mst] {
        for f in fs::read_dir(dir).unwrap() {
            let f = f.unwrap().path();
            if f.file_stem().unwrap() == "p_17" {
                fs::remove_file(f).unwrap();
            }
        }
        assert!(ok(&info(dir, &model)).contains("deepseek-v2-lite"));
    }
    // A .mst whose header gives another expert count is refused at that field.
    let other = write(d.path(), "other.mst", dsv2_mst(3, None, Some(128)));
    fails(
        &[&["info", s(&other)][..], &model].concat(),
        "other.mst: byte 14: the header gives 128 experts per layer; deepseek-v2-lite has 64",
    );
    // Converting with --model checks the same way and writes nothing.
    let one = write(d.path(), "one.csv", dsv2_csv(2, Some((26, 0))));
    let out = d.path().join("one.mst");
    fails(
        &[&["convert", s(&one), "-o", s(&out)][..], &model].concat(),
        &format!("one.csv:52: expert 99 {DSV2}"),
    );
    assert!(!out.exists());
}
