//! Trace readers and writers, one file per format; the format is detected from content.
//! Also the GGUF model-file reader (`gguf`), which reads sizes, not traces.
//!
//! A TRACE argument is a file or a directory (all trace files in it, in natural name
//! order, so `prompt_2` comes before `prompt_10`). Several are concatenated, one
//! response after another.

pub mod binary;
pub mod forum;
pub mod gguf;
pub mod moe_beyond;

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::error::{printable, printable_path, Error, Result};
use crate::trace::{Geometry, Trace};

/// Layer order and top-k: what a token's layout needs (the expert count is separate).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub layers: Vec<u16>,
    pub top_k: u16,
}

impl Layout {
    pub fn of(g: &Geometry) -> Layout {
        Layout {
            layers: g.layers.clone(),
            top_k: g.top_k,
        }
    }

    pub fn accesses_per_token(&self) -> usize {
        self.layers.len() * self.top_k as usize
    }

    pub fn describe_layers(&self) -> String {
        match (self.layers.first(), self.layers.last()) {
            (Some(a), Some(b)) if self.layers.len() > 1 => format!("{a}..{b}"),
            (Some(a), _) => a.to_string(),
            _ => String::new(),
        }
    }
}

/// The expert count of the model named with `--model`: a file with an expert at or above
/// it is refused at the line (or byte) where that expert is read, so among many files the
/// message names the one that does not fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpertLimit {
    /// Routed experts per MoE layer.
    pub n_experts: u16,
    /// The model's name, for messages.
    pub model: &'static str,
}

impl ExpertLimit {
    /// The message for `expert`, at or above the limit.
    pub(crate) fn refusal(&self, expert: impl std::fmt::Display) -> String {
        format!(
            "expert {expert} is out of range for {} ({} experts per layer)",
            self.model, self.n_experts
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Forum,
    MoeBeyondCsv,
    Binary,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Forum => "forum text",
            Format::MoeBeyondCsv => "MoE-Beyond CSV",
            Format::Binary => "moe-spill binary (.mst)",
        }
    }
}

/// Detect the format from the first bytes of a file.
pub fn detect(head: &[u8]) -> Option<Format> {
    if head.starts_with(binary::MAGIC) {
        return Some(Format::Binary);
    }
    let text = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    if text.starts_with(moe_beyond::HEADER_START) {
        return Some(Format::MoeBeyondCsv);
    }
    let first = text
        .split(|&b| b == b'\n')
        .map(|l| l.trim_ascii())
        .find(|l| !l.is_empty())?;
    // `layer` and any white space: a file with tabs between the words is forum text with
    // a mistake (reported at its line), not an unknown format.
    let expert_line =
        first.starts_with(b"layer") && first.get(5).is_some_and(u8::is_ascii_whitespace);
    (expert_line || first.starts_with(b"---")).then_some(Format::Forum)
}

/// The trace files of a TRACE argument: the file itself, or a directory's files with a
/// trace extension (.txt, .csv, .mst) in natural name order.
/// Whether a file in a TRACE directory is read as a trace: `.txt`, `.csv` or `.mst`, not
/// hidden.
pub fn is_trace_name(name: &str) -> bool {
    [".txt", ".csv", ".mst"].iter().any(|x| name.ends_with(x)) && !name.starts_with('.')
}

pub fn trace_files(arg: &Path) -> Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(arg).map_err(|e| Error::io(arg, e))?;
    if !meta.is_dir() {
        return Ok(vec![arg.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(arg).map_err(|e| Error::io(arg, e))? {
        let entry = entry.map_err(|e| Error::io(arg, e))?;
        let path = entry.path();
        if !is_trace_name(&entry.file_name().to_string_lossy()) {
            continue;
        }
        // A trace name that leads nowhere (a dangling link, a file gone since the listing)
        // is an error, not a skip: a response would silently go missing.
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => files.push(path),
            Ok(_) => {} // a directory named like a trace file
            Err(e) => {
                let link = entry.file_type().is_ok_and(|t| t.is_symlink());
                return Err(if link && e.kind() == io::ErrorKind::NotFound {
                    Error::in_file(&path, "symbolic link to a file that does not exist")
                } else {
                    Error::io(&path, e)
                });
            }
        }
    }
    if files.is_empty() {
        return Err(Error::in_file(
            arg,
            "directory holds no trace files (.txt, .csv or .mst)",
        ));
    }
    files.sort_by(|a, b| natural_cmp(&a.to_string_lossy(), &b.to_string_lossy()));
    Ok(files)
}

/// Compare names with runs of digits compared as numbers (`p_2` < `p_10`).
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i].is_ascii_digit() && b[j].is_ascii_digit() {
            let si = i;
            while i < a.len() && a[i].is_ascii_digit() {
                i += 1;
            }
            let sj = j;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            let (na, nb) = (trim_zeros(&a[si..i]), trim_zeros(&b[sj..j]));
            let ord = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
            if ord != std::cmp::Ordering::Equal {
                return ord;
            }
        } else {
            if a[i] != b[j] {
                return a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
    }
    (a.len() - i).cmp(&(b.len() - j)).then_with(|| a.cmp(b))
}

fn trim_zeros(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&c| c == b'0').count();
    &s[n.min(s.len().saturating_sub(1))..]
}

/// Read one trace file of any format. `hint` is the layout fixed by earlier files, which
/// the file must follow; `fallback` the chosen model's, used only where the file alone
/// cannot tell it (a forum file of prompt batches alone: a run may route fewer experts
/// per token than the model); `limit` the chosen model's expert count.
pub fn read_file(
    path: &Path,
    hint: Option<&Layout>,
    fallback: Option<&Layout>,
    limit: Option<ExpertLimit>,
) -> Result<Trace> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    if file.metadata().map(|m| m.is_dir()).unwrap_or(false) {
        return Err(Error::in_file(path, "is a directory"));
    }
    let mut head = vec![0u8; 4096];
    let n = read_up_to(&mut file, &mut head).map_err(|e| Error::io(path, e))?;
    head.truncate(n);
    let format = detect(&head).ok_or_else(|| {
        if head.iter().all(|b| b.is_ascii_whitespace()) {
            Error::in_file(path, "empty trace: the file has no content")
        } else if head.starts_with(gguf::MAGIC) {
            Error::in_file(
                path,
                "is a GGUF model file, not a trace: give it with --gguf FILE",
            )
        } else {
            Error::in_file(
                path,
                "unknown trace format: expected forum text (`layer L expert E` lines), MoE-Beyond CSV (`Layer ID,...` header) or a moe-spill binary (.mst)",
            )
        }
    })?;
    let size = file.metadata().ok().map(|m| m.len());
    if format == Format::Binary {
        let trace = match size.and_then(|s| crate::ids::Mapping::of_file(&file, s)) {
            Some(mapping) => binary::read_mapped(path, mapping)?,
            None => binary::read(path, io::Cursor::new(head).chain(file), size)?,
        };
        if let Some(limit) = limit {
            binary::check_limit(path, &trace, limit)?;
        }
        return Ok(trace);
    }
    let reader = io::Cursor::new(head).chain(file);
    match format {
        Format::Forum => forum::read(path, reader, hint, fallback, limit),
        Format::MoeBeyondCsv => moe_beyond::read(path, reader, limit),
        Format::Binary => unreachable!("read above"),
    }
}

/// Load every file of every TRACE argument into one trace.
pub fn load(args: &[PathBuf], hint: Option<&Layout>, limit: Option<ExpertLimit>) -> Result<Trace> {
    let mut files = Vec::new();
    for arg in args {
        files.extend(trace_files(arg)?);
    }
    load_files(&files, hint, limit, &mut |_, _| {})
}

/// Load the given files in order; `progress(done, total)` after each. `hint` and `limit`
/// come from the chosen model, if any (see [`read_file`]).
pub fn load_files(
    files: &[PathBuf],
    hint: Option<&Layout>,
    limit: Option<ExpertLimit>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Trace> {
    let model = hint;
    let mut earlier: Option<Layout> = None;
    let mut out: Option<Trace> = None;
    for (i, path) in files.iter().enumerate() {
        let t = read_file(path, earlier.as_ref(), model, limit)?;
        // The chosen model's top-k may differ: a run with another number of experts per
        // token (input.rs settles it); files after the first must agree exactly.
        let g = &t.geometry;
        let mismatch = match (&earlier, model) {
            (Some(h), _) => {
                (Layout::of(g) != *h).then(|| layout_mismatch(g, h, "the files before it"))
            }
            (None, Some(m)) => {
                (g.layers != m.layers).then(|| layout_mismatch(g, m, "the chosen model"))
            }
            (None, None) => None,
        };
        if let Some(m) = mismatch {
            return Err(Error::in_file(path, m));
        }
        earlier = Some(Layout::of(&t.geometry));
        out = Some(match out {
            None => t,
            Some(acc) => Trace::concat(acc, t, &printable_path(path))?,
        });
        progress(i + 1, files.len());
    }
    out.ok_or_else(|| Error::new("no trace files given"))
}

/// How a file's geometry differs from the layout `source` fixed.
fn layout_mismatch(g: &Geometry, h: &Layout, source: &str) -> String {
    let (mut mine, mut theirs) = (g.layers.clone(), h.layers.clone());
    mine.sort_unstable();
    theirs.sort_unstable();
    if mine == theirs && g.layers != h.layers {
        let (at, (a, b)) = g
            .layers
            .iter()
            .zip(&h.layers)
            .enumerate()
            .find(|(_, (a, b))| a != b)
            .expect("the orders differ");
        return format!(
            "lists its MoE layers in another order than {source}: layer {a} comes {} where {source} has layer {b}",
            ordinal(at + 1)
        );
    }
    format!(
        "geometry {}: its layers and top-k differ from the {} MoE layers ({}), top-{} of {source}",
        g.describe(),
        h.layers.len(),
        h.describe_layers(),
        h.top_k
    )
}

/// 1st, 2nd, 3rd, 4th ... 11th, 12th, 13th, 21st.
fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// The largest expert id the readers accept: the expert count (largest id + 1) is a u16.
pub const MAX_EXPERT_ID: u16 = u16::MAX - 1;

/// The message for an expert id above [`MAX_EXPERT_ID`] (`id` as written in the file).
pub(crate) fn expert_out_of_range(id: impl std::fmt::Display) -> String {
    format!(
        "expert id {id} is out of range: expert ids run from 0 to {MAX_EXPERT_ID} (the expert count must fit 16 bits)"
    )
}

/// The message for a layer number above 65535 (`layer` as written in the file).
pub(crate) fn layer_out_of_range(layer: impl std::fmt::Display) -> String {
    format!(
        "layer {layer} is out of range: layer numbers run from 0 to {}",
        u16::MAX
    )
}

/// File content for a message: at most `max` bytes, invalid UTF-8 replaced and control
/// characters escaped (`\r`, `\t`, `\u{0}`), so the message stays one printable line.
pub(crate) fn show(bytes: &[u8], max: usize) -> String {
    let cut = &bytes[..bytes.len().min(max)];
    let mut out = printable(&String::from_utf8_lossy(cut));
    if cut.len() < bytes.len() {
        out.push_str("...");
    }
    out
}

/// Dense ids must fit u16: n_layers * n_experts <= 65536.
pub(crate) fn check_id_space(path: &Path, g: &Geometry) -> Result<()> {
    if g.n_ids() > 1 << 16 {
        return Err(Error::in_file(
            path,
            format!(
                "{} layers x {} experts = {} experts in all; moe-spill supports at most 65536",
                g.n_layers(),
                g.n_experts,
                g.n_ids()
            ),
        ));
    }
    Ok(())
}

/// Raw expert numbers (token-major) -> dense ids `slot * n_experts + expert`.
pub(crate) fn make_dense(ids: &mut [u16], g: &Geometry) {
    let k = g.top_k as usize;
    let a = g.accesses_per_token();
    for token in ids.chunks_exact_mut(a) {
        for (slot, layer) in token.chunks_exact_mut(k).enumerate() {
            let base = (slot * g.n_experts as usize) as u16;
            for e in layer {
                *e += base;
            }
        }
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(m) => n += m,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Reads a stream in large blocks and hands out runs of whole lines (ending in '\n',
/// except possibly the last run of the stream).
pub(crate) struct LineChunks<R> {
    inner: R,
    buf: Vec<u8>,
    /// Bytes of an incomplete line carried over to the next block.
    carry: usize,
    /// Bytes of the last chunk handed out (moved away on the next call).
    handed: usize,
    done: bool,
}

const BLOCK: usize = 1 << 20;

impl<R: Read> LineChunks<R> {
    pub fn new(inner: R) -> Self {
        LineChunks {
            inner,
            buf: vec![0; BLOCK],
            carry: 0,
            handed: 0,
            done: false,
        }
    }

    /// The next run of whole lines. Every chunk except a final unterminated one ends
    /// with '\n'; the caller counts the empty piece after that newline as no line.
    pub fn next_chunk(&mut self) -> io::Result<Option<&[u8]>> {
        // Drop what was handed out, keep the carried partial line.
        if self.handed > 0 {
            self.buf
                .copy_within(self.handed..self.handed + self.carry, 0);
            self.handed = 0;
        }
        if self.done {
            return Ok(None);
        }
        loop {
            if self.carry == self.buf.len() {
                let n = self.buf.len();
                self.buf.resize(n * 2, 0); // a line longer than the block
            }
            let n = read_up_to(&mut self.inner, &mut self.buf[self.carry..])?;
            let filled = self.carry + n;
            if n == 0 {
                self.done = true;
                if filled == 0 {
                    return Ok(None);
                }
                // Final line without a newline: hand it out with one appended.
                if self.buf.len() == filled {
                    self.buf.push(b'\n');
                } else {
                    self.buf[filled] = b'\n';
                }
                self.carry = 0;
                self.handed = filled + 1;
                return Ok(Some(&self.buf[..filled + 1]));
            }
            match self.buf[..filled].iter().rposition(|&b| b == b'\n') {
                Some(last) => {
                    self.carry = filled - last - 1;
                    self.handed = last + 1;
                    return Ok(Some(&self.buf[..last + 1]));
                }
                None => self.carry = filled,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order() {
        let mut v = vec!["p_10.csv", "p_2.csv", "p_1.csv", "p_02.csv", "a.csv"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            v,
            vec!["a.csv", "p_1.csv", "p_02.csv", "p_2.csv", "p_10.csv"]
        );
    }

    #[test]
    fn line_chunks_cover_every_line() {
        let text: String = (0..100_000)
            .map(|i| format!("line {i}\n"))
            .collect::<String>()
            + "tail";
        let mut lc = LineChunks::new(text.as_bytes());
        let mut lines = Vec::new();
        while let Some(c) = lc.next_chunk().unwrap() {
            assert_eq!(*c.last().unwrap(), b'\n');
            let s = std::str::from_utf8(c).unwrap();
            lines.extend(s.lines().map(|l| l.to_string()));
        }
        assert_eq!(lines.len(), 100_001);
        assert_eq!(lines[99_999], "line 99999");
        assert_eq!(lines[100_000], "tail");
    }

    #[test]
    fn detects_formats() {
        assert_eq!(detect(b"\n  layer 1 expert 2\n"), Some(Format::Forum));
        assert_eq!(detect(b"---token---\n"), Some(Format::Forum));
        assert_eq!(
            detect(b"Layer ID,Batch Number,Token,Activated Expert IDs\n"),
            Some(Format::MoeBeyondCsv)
        );
        assert_eq!(detect(binary::MAGIC), Some(Format::Binary));
        assert_eq!(detect(b"hello"), None);
        assert_eq!(detect(b""), None);
    }
}
