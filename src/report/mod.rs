//! Report: what output looks like and where it goes. Tables for people, CSV and JSON for
//! programs (`rows`: the replay rows of simulate and sweep, `kernel`: kernel-replay's
//! comparison, `analysis`: the chunk analysis), to stdout or to files written
//! atomically (`atomic`, which also writes traces; `cleanup` removes their temporary
//! names on a signal).

pub mod analysis;
pub mod atomic;
pub mod cleanup;
pub mod kernel;
pub mod rows;

pub use atomic::{
    refuse_input_as_output, refuse_stdout_trace, same_output, write_atomic, write_dir_atomic,
    write_trace, written_trace,
};

use std::io::{self, IsTerminal, Write};
use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Table,
    Csv,
    Json,
}

impl OutputFormat {
    /// The chosen format, or a table on a terminal and CSV otherwise.
    pub fn resolve(chosen: Option<OutputFormat>, to_file: bool) -> OutputFormat {
        chosen.unwrap_or(if !to_file && io::stdout().is_terminal() {
            OutputFormat::Table
        } else {
            OutputFormat::Csv
        })
    }

    /// As `resolve`, for an `-o` file: without --format, a `.json` name gets JSON and a
    /// `.txt` or `.md` name a table.
    pub fn for_output(
        chosen: Option<OutputFormat>,
        path: Option<&std::path::Path>,
    ) -> OutputFormat {
        let ext = path
            .and_then(|p| p.extension())
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        match (chosen, ext.as_deref()) {
            (None, Some("json")) => OutputFormat::Json,
            (None, Some("txt" | "md")) => OutputFormat::Table,
            _ => Self::resolve(chosen, path.is_some()),
        }
    }
}

/// A simple text table: a header and rows of cells, columns padded to width, numbers
/// right-aligned.
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Table {
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    pub fn render(&self) -> String {
        let n = self.header.len();
        let mut width = vec![0; n];
        for row in std::iter::once(&self.header).chain(&self.rows) {
            for (i, c) in row.iter().enumerate() {
                width[i] = width[i].max(c.chars().count());
            }
        }
        // A column of numbers is right-aligned, its missing figures ("-") with them.
        let numeric: Vec<bool> = (0..n)
            .map(|i| {
                self.rows.iter().all(|r| {
                    r[i] == "-"
                        || r[i]
                            .trim_end_matches('%')
                            .replace(',', "")
                            .parse::<f64>()
                            .is_ok()
                })
            })
            .collect();
        let mut out = String::new();
        let line = |row: &Vec<String>, out: &mut String| {
            let cells: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    if numeric[i] {
                        format!("{:>w$}", c, w = width[i])
                    } else {
                        format!("{:<w$}", c, w = width[i])
                    }
                })
                .collect();
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
        };
        line(&self.header, &mut out);
        let rule: Vec<String> = width.iter().map(|&w| "-".repeat(w)).collect();
        out.push_str(&rule.join("  "));
        out.push('\n');
        for row in &self.rows {
            line(row, &mut out);
        }
        out
    }

    pub fn to_csv(&self) -> String {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(&self.header).expect("in-memory write");
        for r in &self.rows {
            w.write_record(r).expect("in-memory write");
        }
        String::from_utf8(w.into_inner().expect("in-memory write")).expect("utf-8")
    }
}

/// Write `text` to stdout (a closed pipe is not an error) or atomically to `path`.
/// Whether the process started with stdout closed (`>&-`). Rust's runtime reopens a
/// closed standard descriptor on /dev/null before `main`, so the results would vanish
/// with exit status 0; the binary checks before that (main.rs) and says so here.
pub static STDOUT_CLOSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn emit(text: &str, path: Option<&Path>) -> Result<()> {
    match path {
        Some(p) => write_atomic(p, |w| w.write_all(text.as_bytes())),
        None => {
            if STDOUT_CLOSED.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(Error::new(
                    "stdout is closed: the results have nowhere to go (redirect it to a file, or give -o FILE to a command that takes it)",
                ));
            }
            // The notes on what the results rest on, before them.
            crate::notes::release();
            let mut out = io::stdout().lock();
            match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
                Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
                    Err(Error::new(format!("stdout: {e}")))
                }
                _ => Ok(()),
            }
        }
    }
}

/// Refuse `-o FILE` before the work: a directory, a file the command reads, or a
/// directory that is not there (`inputs` as for [`refuse_input_as_output`]).
pub fn check_output(output: Option<&Path>, inputs: &[std::path::PathBuf]) -> Result<()> {
    let Some(o) = output else { return Ok(()) };
    if o.is_dir() {
        return Err(Error::in_file(o, "is a directory; -o takes a file name"));
    }
    if o.as_os_str().to_string_lossy().ends_with('/') {
        return Err(Error::in_file(o, "names a directory; -o takes a file name"));
    }
    refuse_input_as_output(o, inputs)
}

/// The results to `-o FILE` (atomically, with a note naming it and `what` it holds) or
/// to stdout.
pub fn deliver(text: &str, output: Option<&Path>, quiet: bool, what: &str) -> Result<()> {
    match output {
        Some(path) => {
            write_atomic(path, |w| w.write_all(text.as_bytes()))?;
            if !quiet {
                crate::note!(
                    "moe-spill: wrote {} ({what})",
                    crate::error::printable_path(path)
                );
            }
            Ok(())
        }
        None => emit(text, None),
    }
}

/// "1 row", "5 rows": what a results file holds, for the note that names it.
pub fn rows_held(n: usize) -> String {
    match n {
        1 => "1 row".to_string(),
        n => format!("{n} rows"),
    }
}

/// Format a float with `d` decimals.
pub fn fixed(v: f64, d: usize) -> String {
    format!("{v:.d$}")
}

/// Records as CSV: one column per field `T` serializes (in order, a default record
/// names them, so no rows still gives the header) except `skip`, then the `extra`
/// columns whose cells `extra_cells` gives. Cells read as `to_string` would: numbers
/// through Display (f64 `1`, not `1.0`), None as an empty cell.
pub fn serde_csv<T: Serialize + Default>(
    rows: &[T],
    skip: &[&str],
    extra: Vec<String>,
    extra_cells: impl Fn(&T) -> Vec<String>,
) -> String {
    let fields = |r: &T| match serde_json::to_value(r).expect("a record serializes") {
        serde_json::Value::Object(map) => {
            map.into_iter().filter(|(k, _)| !skip.contains(&k.as_str()))
        }
        _ => panic!("a record serializes as a map"),
    };
    let mut header: Vec<String> = fields(&T::default()).map(|(k, _)| k).collect();
    header.extend(extra);
    let mut t = Table {
        header,
        rows: Vec::new(),
    };
    for r in rows {
        let mut cells: Vec<String> = fields(r).map(|(_, v)| cell(&v)).collect();
        cells.extend(extra_cells(r));
        t.rows.push(cells);
    }
    t.to_csv()
}

/// A scalar as `to_string` of the field would write it. serde_json keeps an f64 as an
/// f64 (even when whole), so Display gives the same digits; JSON has no NaN or
/// infinity, which come out empty.
fn cell(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => u.to_string(),
            (_, Some(i), _) => i.to_string(),
            (_, _, Some(f)) => f.to_string(),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}
