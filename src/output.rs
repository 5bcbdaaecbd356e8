//! Output: tables for people, CSV and JSON for programs; files written atomically.

use std::fs;
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
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
        let numeric: Vec<bool> = (0..n)
            .map(|i| {
                self.rows.iter().all(|r| {
                    r[i].trim_end_matches('%')
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
pub fn emit(text: &str, path: Option<&Path>) -> Result<()> {
    match path {
        Some(p) => write_atomic(p, |w| w.write_all(text.as_bytes())),
        None => {
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

/// Write a file through a temporary name in the same directory and rename it into
/// place, so a failed run never leaves a partial file behind.
pub fn write_atomic(
    path: &Path,
    fill: impl FnOnce(&mut io::BufWriter<fs::File>) -> io::Result<()>,
) -> Result<()> {
    let tmp = temp_name(path);
    let result = (|| {
        let file = fs::File::create(&tmp)?;
        let mut w = io::BufWriter::with_capacity(1 << 20, file);
        fill(&mut w)?;
        w.flush()?;
        w.get_ref().sync_data()?;
        drop(w);
        fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Create a directory of files atomically: fill a temporary sibling directory, then
/// rename it into place. An existing non-empty directory is refused.
pub fn write_dir_atomic(path: &Path, fill: impl FnOnce(&Path) -> io::Result<()>) -> Result<()> {
    if let Ok(mut entries) = fs::read_dir(path) {
        if entries.next().is_some() {
            return Err(Error::in_file(
                path,
                "output directory exists and is not empty; remove it or choose another -o",
            ));
        }
    } else if path.exists() {
        return Err(Error::in_file(path, "exists and is not a directory"));
    }
    let tmp = temp_name(path);
    let result = (|| {
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp)?;
        fill(&tmp)?;
        if path.exists() {
            fs::remove_dir(path)?; // empty, checked above
        }
        fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = fs::remove_dir_all(&tmp);
        Error::io(path, e)
    })
}

fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Format a float with `d` decimals.
pub fn fixed(v: f64, d: usize) -> String {
    format!("{v:.d$}")
}
