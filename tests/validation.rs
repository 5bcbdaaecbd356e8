//! docs/VALIDATION.md cannot go stale: every row's command runs again here, and its
//! tokens/s must be the one the page prints, in the row and in the summary table, as
//! must the ratio to the measured figure and the summary line over all rows, and the
//! rated-bandwidth table beside it (each row's command with `--io rated`).
//!
//! The page's blocks: ```` ```sh validation-setup ```` (commands that make the traces,
//! run first in a scratch folder) and ```` ```sh validation-row ID ```` (one `simulate`
//! per row; the test adds `--format csv -q` and reads `est_tok_s`). The summary table
//! has one line per row: `| ID | setup | engine | measured | predicted | ratio |`.
//!
//! Prefill rows (section "Prefill") are ```` ```sh validation-prefill-row ID ```` blocks
//! with IDs `P1`, `P2`, ...: one `simulate --phase all --prompt-tokens L`, whose
//! `prefill_tok_s` (the first L tokens of the trace's prompts) is the prediction. Their
//! summary table has the same columns, and their own summary line starts `Prefill: `.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_moe-spill");

/// Commands of a fenced block, backslash continuations joined.
fn commands(block: &str) -> Vec<Vec<String>> {
    let joined = block.replace("\\\n", " ");
    joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect()
}

/// Fenced blocks whose info string starts with `sh validation-`: (info, body).
fn blocks(doc: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut lines = doc.lines();
    while let Some(l) = lines.next() {
        if let Some(info) = l.strip_prefix("```sh validation-") {
            let mut body = String::new();
            for b in lines.by_ref() {
                if b.starts_with("```") {
                    break;
                }
                body.push_str(b);
                body.push('\n');
            }
            out.push((info.trim().to_string(), body));
        }
    }
    out
}

/// A scratch folder with the page's setup blocks run in it (the traces the rows read).
fn set_up(all: &[(String, String)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (info, body) in all {
        if info == "setup" {
            for c in commands(body) {
                run(&c, dir.path());
            }
        }
    }
    dir
}

fn run(args: &[String], dir: &Path) -> String {
    assert_eq!(
        args[0], "moe-spill",
        "a command must start with moe-spill: {args:?}"
    );
    let out = Command::new(BIN)
        .args(&args[1..])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Column `name` of the CSV a `simulate` prints, which must be one row (one prompt
/// length, one capacity).
fn column_of_one_row(csv: &str, name: &str) -> f64 {
    let mut rdr = csv::Reader::from_reader(csv.as_bytes());
    let col = rdr
        .headers()
        .unwrap()
        .iter()
        .position(|h| h == name)
        .unwrap_or_else(|| panic!("no column {name}"));
    let recs: Vec<_> = rdr.records().map(Result::unwrap).collect();
    assert_eq!(recs.len(), 1, "one row expected:\n{csv}");
    recs[0][col]
        .parse()
        .unwrap_or_else(|_| panic!("{name} is `{}`", &recs[0][col]))
}

struct Summary {
    measured: f64,
    predicted: f64,
    ratio: f64,
}

/// The summary table's rows whose ID is `letter` and a number.
fn summary_of(doc: &str, letter: char) -> BTreeMap<String, Summary> {
    let mut rows = BTreeMap::new();
    for l in doc.lines() {
        let cells: Vec<&str> = l.split('|').map(str::trim).collect();
        // | ID | setup | engine | measured | predicted | ratio |
        if cells.len() == 8 && cells[1].starts_with(letter) && cells[1][1..].parse::<u32>().is_ok()
        {
            let num = |s: &str| s.trim_start_matches('~').parse::<f64>().unwrap();
            rows.insert(
                cells[1].to_string(),
                Summary {
                    measured: num(cells[4]),
                    predicted: num(cells[5]),
                    ratio: num(cells[6]),
                },
            );
        }
    }
    rows
}

/// Run the page's setup blocks, then the one command of every ```` ```sh validation-KIND
/// ID ```` block (`kind`: "row" or "prefill-row"), and check `column` of its one CSV row
/// and its ratio to the measured value against the summary table of the IDs `letter`N.
/// `check` vets each command first. Returns the ratios.
fn recompute(
    doc: &str,
    kind: &str,
    letter: char,
    column: &str,
    check: impl Fn(&str, &[String]),
) -> Vec<f64> {
    let table = summary_of(doc, letter);
    assert!(
        table.len() >= 2,
        "the {kind} summary has {} rows",
        table.len()
    );
    let all = blocks(doc);
    let dir = set_up(&all);
    let mut ratios = Vec::new();
    let prefix = format!("{kind} ");
    for (info, body) in &all {
        let Some(id) = info.strip_prefix(&prefix) else {
            continue;
        };
        let cmds = commands(body);
        assert_eq!(cmds.len(), 1, "{kind} {id}: one command");
        let mut c = cmds[0].clone();
        check(id, &c);
        c.extend(["--format", "csv", "-q"].map(String::from));
        let t = column_of_one_row(&run(&c, dir.path()), column);
        let s = table
            .get(id)
            .unwrap_or_else(|| panic!("{kind} {id} is not in the summary"));
        assert_eq!(
            format!("{:.3}", t),
            format!("{:.3}", s.predicted),
            "{kind} {id}: the command gives {t}"
        );
        let ratio = t / s.measured;
        assert_eq!(
            format!("{ratio:.2}"),
            format!("{:.2}", s.ratio),
            "{kind} {id}: predicted / measured"
        );
        ratios.push(ratio);
    }
    assert_eq!(
        ratios.len(),
        table.len(),
        "every {kind} of the summary has a command"
    );
    ratios
}

#[test]
fn every_validation_row_recomputes_to_what_the_page_says() {
    let doc = std::fs::read_to_string("docs/VALIDATION.md").unwrap();
    let ratios = recompute(&doc, "row", 'R', "est_tok_s", |_, _| {});
    let line = summary_line(&ratios);
    assert!(doc.contains(&line), "docs/VALIDATION.md must state: {line}");
}

/// Rows within 1.5x and the median |predicted / measured - 1|, as the page states them.
fn summary_line(ratios: &[f64]) -> String {
    let within = ratios
        .iter()
        .filter(|&&r| (1.0 / 1.5..=1.5).contains(&r))
        .count();
    let mut errors: Vec<f64> = ratios.iter().map(|r| (r - 1.0).abs()).collect();
    errors.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = errors.len();
    let median = if n % 2 == 1 {
        errors[n / 2]
    } else {
        (errors[n / 2 - 1] + errors[n / 2]) / 2.0
    };
    format!(
        "{within} of {n} rows within 1.5x of the measured value; median |predicted / measured - 1| = {:.0} %",
        median * 100.0
    )
}

#[test]
fn every_prefill_row_recomputes_to_what_the_page_says() {
    let doc = std::fs::read_to_string("docs/VALIDATION.md").unwrap();
    let ratios = recompute(&doc, "prefill-row", 'P', "prefill_tok_s", |id, c| {
        assert!(
            c.iter().any(|a| a == "--prompt-tokens")
                && c.windows(2).any(|w| w == ["--phase", "all"]),
            "prefill row {id}: a prefill row times prompts (--phase all --prompt-tokens L)"
        );
    });
    let line = format!("Prefill: {}", summary_line(&ratios));
    assert!(
        doc.lines().any(|l| l.trim() == line),
        "docs/VALIDATION.md must state: {line}"
    );
}

/// A command without the flags of the engines, which `--io rated` refuses (in either
/// form, `--flag value` or `--flag=value`).
fn without_engine_flags(command: Vec<String>) -> Vec<String> {
    const WITH_VALUE: [&str; 3] = ["--io-workers", "--mmap-advice", "--read-ahead-kb"];
    let mut out = Vec::new();
    let mut args = command.into_iter();
    while let Some(a) = args.next() {
        let flag = a.split('=').next().unwrap_or_default();
        if a == "--no-read-overlap" || (a.contains('=') && WITH_VALUE.contains(&flag)) {
            continue;
        }
        if WITH_VALUE.contains(&a.as_str()) {
            args.next();
            continue;
        }
        out.push(a);
    }
    out
}

/// The rated-bandwidth table (`| ID | tok/s |`): every row's command with `--io rated`
/// (and without the engines' flags) gives the figure the page prints.
#[test]
fn the_rated_bandwidth_column_recomputes_too() {
    let doc = std::fs::read_to_string("docs/VALIDATION.md").unwrap();
    let mut rated = BTreeMap::new();
    for l in doc.lines() {
        let cells: Vec<&str> = l.split('|').map(str::trim).collect();
        if cells.len() == 4 && cells[1].starts_with('R') && cells[1][1..].parse::<u32>().is_ok() {
            rated.insert(cells[1].to_string(), cells[2].to_string());
        }
    }
    assert!(
        rated.len() >= 2,
        "the rated-bandwidth table has {} rows",
        rated.len()
    );
    let all = blocks(&doc);
    let dir = set_up(&all);
    let mut seen = 0;
    for (info, body) in &all {
        let Some(id) = info.strip_prefix("row ") else {
            continue;
        };
        let mut c = without_engine_flags(commands(body).remove(0));
        let io = c.iter().position(|a| a == "--io").expect("--io") + 1;
        c[io] = "rated".into();
        c.extend(["--format", "csv", "-q"].map(String::from));
        let t = column_of_one_row(&run(&c, dir.path()), "est_tok_s");
        let want = rated
            .get(id)
            .unwrap_or_else(|| panic!("row {id} is not in the rated-bandwidth table"));
        assert_eq!(&format!("{t:.2}"), want, "row {id} with --io rated");
        seen += 1;
    }
    assert_eq!(seen, rated.len(), "every rated row has a command");
}
