//! The forum format of the seed post: one response per file,
//!
//! ```text
//! ---began prompt processing---
//! layer 3 expert 17
//! ...
//! ---ended prompt processing---
//! layer 3 expert 188
//! layer 3 expert 7
//! ...
//! ---token---
//! ```
//!
//! `layer L expert E` lines, tokens separated by lines that start with `---token`, blank
//! lines ignored, leading and trailing white space ignored (as the seed's script strips
//! lines). A token is a non-empty group of expert lines: separators around nothing make
//! no token, exactly as in the seed's analyze_experts.py.
//!
//! Every token lists every MoE layer in the same order with top-k distinct experts each.
//! Inside a prompt block a group may hold a whole batch in llama.cpp's evaluation order:
//! layer by layer, each layer's lines in runs of top-k per token (several such sweeps
//! for several micro-batches). Such a group is split into tokens once top-k is known
//! (from a decode token, an earlier file or --model).

use std::io::{Read, Write};
use std::path::Path;

use super::{
    expert_out_of_range, layer_out_of_range, show, ExpertLimit, Layout, LineChunks, MAX_EXPERT_ID,
};
use crate::error::{Error, Result};
use crate::trace::{Geometry, Trace};

const BEGIN_PROMPT: &[u8] = b"---began prompt processing---";
const END_PROMPT: &[u8] = b"---ended prompt processing---";
const TOKEN_SEP: &[u8] = b"---token";

/// One `layer L expert E` line, with its line number for messages.
#[derive(Clone, Copy)]
struct Line {
    layer: u16,
    expert: u16,
    no: u64,
}

struct Parser<'p> {
    path: &'p Path,
    layout: Option<Layout>,
    /// The chosen model's layout: prompt batches split by its top-k when the file has no
    /// decode token to tell its own.
    fallback: Option<Layout>,
    /// The chosen model's expert count, if any.
    limit: Option<ExpertLimit>,
    /// The largest expert number accepted: [`MAX_EXPERT_ID`], or below the limit.
    max_expert_allowed: u32,
    /// Raw expert numbers, token-major (made dense once the expert count is known).
    experts: Vec<u16>,
    prompt: Vec<bool>,
    max_expert: Option<u16>,
    /// Lines of the group being read.
    group: Vec<Line>,
    /// Groups read before the layout was known, with their phase (true = prompt).
    pending: Vec<(Vec<Line>, bool)>,
    in_prompt: bool,
    prompt_opened_at: u64,
}

/// Read one forum-format file (one response). `hint` gives the layout when an earlier
/// file already fixed it; `fallback` the chosen model's, for prompt batches when no
/// decode token tells the file's own top-k; `limit` the chosen model's expert count.
pub fn read(
    path: &Path,
    reader: impl Read,
    hint: Option<&Layout>,
    fallback: Option<&Layout>,
    limit: Option<ExpertLimit>,
) -> Result<Trace> {
    let mut p = Parser {
        path,
        layout: hint.cloned(),
        fallback: fallback.cloned(),
        limit,
        max_expert_allowed: limit.map_or(MAX_EXPERT_ID, |l| l.n_experts.saturating_sub(1)) as u32,
        experts: Vec::new(),
        prompt: Vec::new(),
        max_expert: None,
        group: Vec::new(),
        pending: Vec::new(),
        in_prompt: false,
        prompt_opened_at: 0,
    };
    let mut lines = LineChunks::new(reader);
    let mut no: u64 = 0;
    while let Some(chunk) = lines.next_chunk().map_err(|e| Error::io(path, e))? {
        for raw in chunk.split(|&b| b == b'\n') {
            no += 1;
            // A UTF-8 byte-order mark (as Windows editors save) is not part of line 1.
            let raw = if no == 1 {
                raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw)
            } else {
                raw
            };
            p.line(raw, no)?;
        }
        no -= 1; // the empty piece after the chunk's final newline is not a line
    }
    p.finish(no)
}

impl Parser<'_> {
    #[inline]
    fn line(&mut self, raw: &[u8], no: u64) -> Result<()> {
        let line = raw.trim_ascii();
        if line.is_empty() {
            return Ok(());
        }
        if let Some((layer, expert)) = parse_expert_line(line) {
            if layer > u16::MAX as u32 || expert > self.max_expert_allowed {
                return Err(self.out_of_range(line, no, layer, expert));
            }
            self.group.push(Line {
                layer: layer as u16,
                expert: expert as u16,
                no,
            });
            return Ok(());
        }
        if line.starts_with(TOKEN_SEP) {
            return self.end_group();
        }
        if line == BEGIN_PROMPT {
            if self.in_prompt {
                return Err(Error::at_line(
                    self.path,
                    no,
                    format!(
                        "prompt block opened again inside the one opened at line {}",
                        self.prompt_opened_at
                    ),
                ));
            }
            self.end_group()?;
            self.in_prompt = true;
            self.prompt_opened_at = no;
            return Ok(());
        }
        if line == END_PROMPT {
            if !self.in_prompt {
                return Err(Error::at_line(
                    self.path,
                    no,
                    "prompt block closed but never opened",
                ));
            }
            self.end_group()?;
            self.in_prompt = false;
            return Ok(());
        }
        let words: Vec<&[u8]> = line
            .split(u8::is_ascii_whitespace)
            .filter(|w| !w.is_empty())
            .collect();
        let number = |w: &[u8]| !w.is_empty() && w.iter().all(u8::is_ascii_digit);
        if let [b"layer", l, b"expert", e] = words[..] {
            if number(l) && number(e) {
                return Err(Error::at_line(
                    self.path,
                    no,
                    format!(
                        "words must be separated by single spaces (`layer L expert E`), found `{}`",
                        show(line, 60)
                    ),
                ));
            }
        }
        Err(Error::at_line(
            self.path,
            no,
            format!(
                "expected `layer L expert E`, a `---token` separator or a prompt-block marker, found `{}`",
                show(line, 60)
            ),
        ))
    }

    /// The error for a `layer L expert E` line whose L or E does not fit (quoting the
    /// number as written: the parsed value saturates).
    #[cold]
    fn out_of_range(&self, line: &[u8], no: u64, layer: u32, expert: u32) -> Error {
        let mut words = line.split(|&b| b == b' ');
        let (l, e) = (
            words.nth(1).unwrap_or_default(),
            words.nth(1).unwrap_or_default(),
        );
        let msg = if layer > u16::MAX as u32 {
            layer_out_of_range(show(l, 30))
        } else {
            match self.limit {
                Some(limit) if expert <= MAX_EXPERT_ID as u32 => limit.refusal(expert),
                _ => expert_out_of_range(show(e, 30)),
            }
        };
        Error::at_line(self.path, no, msg)
    }

    fn end_group(&mut self) -> Result<()> {
        if self.group.is_empty() {
            return Ok(());
        }
        let group = std::mem::take(&mut self.group);
        let prompt = self.in_prompt;
        if self.layout.is_none() {
            if prompt {
                self.pending.push((group, prompt));
                return Ok(());
            }
            let layout = layout_of_token(self.path, &group)?;
            // The chosen model fixes the layers (not top-k): say where the first token
            // leaves them.
            if let Some(f) = self.fallback.as_ref().filter(|f| f.layers != layout.layers) {
                let k = layout.top_k as usize;
                let slot = (0..layout.layers.len())
                    .find(|&i| f.layers.get(i) != Some(&layout.layers[i]))
                    .unwrap_or(layout.layers.len());
                let msg = match (group.get(slot * k), f.layers.get(slot)) {
                    (Some(l), Some(want)) => (l.no, format!(
                        "layer {} where layer {want} was expected (the chosen model's MoE layers are {})",
                        l.layer,
                        f.describe_layers()
                    )),
                    _ => (group.last().map_or(0, |l| l.no), format!(
                        "token ends after {} expert lines ({} layers x top-{k}); the chosen model has {} MoE layers ({})",
                        group.len(),
                        layout.layers.len(),
                        f.layers.len(),
                        f.describe_layers()
                    )),
                };
                return Err(Error::at_line(self.path, msg.0, msg.1));
            }
            self.layout = Some(layout);
            for (g, ph) in std::mem::take(&mut self.pending) {
                self.emit(&g, ph)?;
            }
        }
        self.emit(&group, prompt)?;
        self.group = group;
        self.group.clear();
        Ok(())
    }

    /// Append a group (one token, or a prompt batch) to the trace.
    fn emit(&mut self, group: &[Line], prompt: bool) -> Result<()> {
        let layout = self.layout.as_ref().expect("layout known");
        let a = layout.accesses_per_token();
        if prompt && group.len() > a {
            return self.emit_batch(group);
        }
        self.check_token(group)?;
        for l in group {
            self.experts.push(l.expert);
            self.max_expert = self.max_expert.max(Some(l.expert));
        }
        self.prompt.push(prompt);
        Ok(())
    }

    /// Check that a group is exactly one token of the known layout.
    fn check_token(&self, group: &[Line]) -> Result<()> {
        let layout = self.layout.as_ref().expect("layout known");
        let k = layout.top_k as usize;
        for (i, l) in group.iter().enumerate() {
            let slot = i / k;
            match layout.layers.get(slot) {
                Some(&want) if want == l.layer => {}
                Some(&want) => {
                    return Err(Error::at_line(
                        self.path,
                        l.no,
                        format!(
                            "layer {} where layer {want} was expected (every token lists layers {} with {k} experts each)",
                            l.layer,
                            layout.describe_layers()
                        ),
                    ))
                }
                None => {
                    return Err(Error::at_line(
                        self.path,
                        l.no,
                        format!("token has more than {} expert lines ({} layers x top-{k})", group.len().min(i), layout.layers.len()),
                    ))
                }
            }
            let start = slot * k;
            if group[start..i].iter().any(|o| o.expert == l.expert) {
                return Err(Error::at_line(
                    self.path,
                    l.no,
                    format!(
                        "expert {} of layer {} appears twice in one token",
                        l.expert, l.layer
                    ),
                ));
            }
        }
        if group.len() != layout.accesses_per_token() {
            let last = group.last().expect("non-empty group");
            return Err(Error::at_line(
                self.path,
                last.no,
                format!(
                    "token ends after {} expert lines; expected {} ({} layers x top-{k})",
                    group.len(),
                    layout.accesses_per_token(),
                    layout.layers.len()
                ),
            ));
        }
        Ok(())
    }

    /// A prompt batch in evaluation order: per micro-batch, layer after layer, each layer
    /// holding n_tokens * top_k lines.
    fn emit_batch(&mut self, group: &[Line]) -> Result<()> {
        let layout = self.layout.clone().expect("layout known");
        let k = layout.top_k as usize;
        let n_layers = layout.layers.len();
        // Runs of equal layer numbers.
        let mut runs: Vec<(usize, usize)> = Vec::new(); // (start, len)
        let mut i = 0;
        while i < group.len() {
            let mut j = i + 1;
            while j < group.len() && group[j].layer == group[i].layer {
                j += 1;
            }
            runs.push((i, j - i));
            i = j;
        }
        if !runs.len().is_multiple_of(n_layers) {
            return Err(Error::at_line(
                self.path,
                group[0].no,
                format!(
                    "prompt batch has {} layer runs, not a multiple of the {n_layers} MoE layers",
                    runs.len()
                ),
            ));
        }
        let mut token = Vec::with_capacity(layout.accesses_per_token());
        for sweep in runs.chunks(n_layers) {
            let (_, len0) = sweep[0];
            for (slot, &(start, len)) in sweep.iter().enumerate() {
                let l = group[start];
                if l.layer != layout.layers[slot] {
                    return Err(Error::at_line(
                        self.path,
                        l.no,
                        format!(
                            "prompt batch: layer {} where layer {} was expected",
                            l.layer, layout.layers[slot]
                        ),
                    ));
                }
                if len != len0 || len % k != 0 {
                    return Err(Error::at_line(
                        self.path,
                        l.no,
                        format!("prompt batch: layer {} has {len} lines; expected {len0}, a multiple of top-{k}", l.layer),
                    ));
                }
            }
            for t in 0..len0 / k {
                token.clear();
                for &(start, _) in sweep {
                    token.extend_from_slice(&group[start + t * k..start + (t + 1) * k]);
                }
                self.check_token(&token)?;
                for l in &token {
                    self.experts.push(l.expert);
                    self.max_expert = self.max_expert.max(Some(l.expert));
                }
                self.prompt.push(true);
            }
        }
        Ok(())
    }

    fn finish(mut self, last_line: u64) -> Result<Trace> {
        if self.in_prompt {
            return Err(Error::at_line(
                self.path,
                self.prompt_opened_at,
                "prompt block is never closed (no `---ended prompt processing---`)",
            ));
        }
        self.end_group()?;
        if self.layout.is_none() && !self.pending.is_empty() {
            if let Some(f) = self.fallback.take() {
                self.layout = Some(f);
                for (g, ph) in std::mem::take(&mut self.pending) {
                    self.emit(&g, ph)?;
                }
            }
        }
        if !self.pending.is_empty() {
            return Err(Error::at_line(
                self.path,
                self.pending[0].0[0].no,
                "only prompt tokens and no decode token: the layout (top-k) is unknown; pass --model",
            ));
        }
        let Some(layout) = self.layout.take() else {
            return Err(Error::at_line(
                self.path,
                last_line.max(1),
                "empty trace: no `layer L expert E` lines",
            ));
        };
        let n_experts = self.max_expert.map_or(1, |m| m + 1);
        let geometry = Geometry {
            layers: layout.layers,
            n_experts,
            top_k: layout.top_k,
        };
        super::check_id_space(self.path, &geometry)?;
        let mut ids = self.experts;
        super::make_dense(&mut ids, &geometry);
        let mut trace = Trace::empty(geometry, false);
        trace.ids = ids.into();
        trace.prompt = self.prompt;
        trace.end_response();
        Ok(trace)
    }
}

/// The layout (layer order, top-k) that one token defines.
fn layout_of_token(path: &Path, group: &[Line]) -> Result<Layout> {
    let mut layers: Vec<u16> = Vec::new();
    let mut k = 0usize;
    let mut run = 0usize;
    for (i, l) in group.iter().enumerate() {
        if i > 0 && l.layer == group[i - 1].layer {
            run += 1;
            continue;
        }
        if i > 0 {
            if k == 0 {
                k = run;
            } else if run != k {
                return Err(Error::at_line(
                    path,
                    group[i - 1].no,
                    format!(
                        "layer {} has {run} experts in this token but layer {} has {k}",
                        group[i - 1].layer,
                        layers[0]
                    ),
                ));
            }
        }
        if layers.contains(&l.layer) {
            return Err(Error::at_line(
                path,
                l.no,
                format!("layer {} appears twice in one token", l.layer),
            ));
        }
        layers.push(l.layer);
        run = 1;
    }
    if k == 0 {
        k = run;
    } else if run != k {
        let last = group.last().expect("non-empty");
        return Err(Error::at_line(
            path,
            last.no,
            format!(
                "layer {} has {run} experts in this token but layer {} has {k}",
                last.layer, layers[0]
            ),
        ));
    }
    Ok(Layout {
        layers,
        top_k: k as u16,
    })
}

/// `layer L expert E` (already trimmed) -> (L, E); None if the line is anything else.
/// The numbers are not range-checked here (see [`parse_num`]).
#[inline]
fn parse_expert_line(line: &[u8]) -> Option<(u32, u32)> {
    let rest = line.strip_prefix(b"layer ")?;
    let (layer, rest) = parse_num(rest)?;
    let rest = rest.strip_prefix(b" expert ")?;
    let (expert, rest) = parse_num(rest)?;
    rest.is_empty().then_some((layer, expert))
}

/// Leading decimal digits, their value saturating at 2^20 (far above any u16, so a
/// number too large is still a number, reported as out of range rather than as syntax).
#[inline]
fn parse_num(s: &[u8]) -> Option<(u32, &[u8])> {
    let mut v: u32 = 0;
    let mut n = 0;
    while n < s.len() && s[n].is_ascii_digit() {
        v = (v * 10 + (s[n] - b'0') as u32).min(1 << 20);
        n += 1;
    }
    (n > 0).then(|| (v, &s[n..]))
}

/// Write response `r` of a trace in the canonical forum form: each token's lines followed
/// by `---token---`, prompt tokens inside one block per run of prompt tokens.
pub fn write(trace: &Trace, r: usize, out: &mut impl Write) -> std::io::Result<()> {
    let g = &trace.geometry;
    let k = g.top_k as usize;
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut in_prompt = false;
    for t in trace.response(r) {
        let p = trace.prompt[t];
        if p != in_prompt {
            buf.extend_from_slice(if p { BEGIN_PROMPT } else { END_PROMPT });
            buf.push(b'\n');
            in_prompt = p;
        }
        for (i, &id) in trace.token(t).iter().enumerate() {
            let (_, e) = trace.split_id(id);
            buf.extend_from_slice(b"layer ");
            push_num(&mut buf, g.layers[i / k]);
            buf.extend_from_slice(b" expert ");
            push_num(&mut buf, e);
            buf.push(b'\n');
        }
        buf.extend_from_slice(b"---token---\n");
        if buf.len() >= 60 * 1024 {
            out.write_all(&buf)?;
            buf.clear();
        }
    }
    if in_prompt {
        buf.extend_from_slice(END_PROMPT);
        buf.push(b'\n');
    }
    out.write_all(&buf)
}

fn push_num(buf: &mut Vec<u8>, mut v: u16) {
    let mut tmp = [0u8; 5];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    buf.extend_from_slice(&tmp[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Trace> {
        read(Path::new("t.txt"), text.as_bytes(), None, None, None)
    }

    #[test]
    fn parses_tokens_and_skips_empty_groups() {
        let t = parse("---token---\nlayer 1 expert 3\nlayer 1 expert 0\nlayer 2 expert 1\nlayer 2 expert 2\n---token---\n\n---token---\n  layer 1 expert 2 \nlayer 1 expert 1\nlayer 2 expert 0\nlayer 2 expert 3").unwrap();
        assert_eq!(t.geometry.layers, vec![1, 2]);
        assert_eq!(t.geometry.top_k, 2);
        assert_eq!(t.geometry.n_experts, 4);
        assert_eq!(t.n_tokens(), 2);
        assert_eq!(t.ids, vec![3, 0, 5, 6, 2, 1, 4, 7]);
    }

    #[test]
    fn prompt_batch_in_layer_order_is_split_into_tokens() {
        // Two prompt tokens as llama.cpp prints a batch: layer 1 for both, then layer 2.
        let text = "---began prompt processing---\nlayer 1 expert 0\nlayer 1 expert 1\nlayer 1 expert 2\nlayer 1 expert 3\nlayer 2 expert 4\nlayer 2 expert 5\nlayer 2 expert 6\nlayer 2 expert 7\n---ended prompt processing---\nlayer 1 expert 1\nlayer 1 expert 2\nlayer 2 expert 3\nlayer 2 expert 4\n---token---\n";
        let t = parse(text).unwrap();
        assert_eq!(t.prompt, vec![true, true, false]);
        let n = t.geometry.n_experts;
        assert_eq!(t.token(0), &[0, 1, n + 4, n + 5]);
        assert_eq!(t.token(1), &[2, 3, n + 6, n + 7]);
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse("layer 1 expert 0\nlayer 1 expert 1\n---token---\nlayer 1 expert 0\nlayer one expert 1\n").unwrap_err();
        assert!(
            e.0.starts_with("t.txt:5: expected `layer L expert E`"),
            "{e}"
        );
        let e = parse(
            "layer 1 expert 0\nlayer 2 expert 1\n---token---\nlayer 1 expert 0\n---token---\n",
        )
        .unwrap_err();
        assert!(
            e.0.starts_with("t.txt:4: token ends after 1 expert lines"),
            "{e}"
        );
        let e = parse("layer 1 expert 0\nlayer 1 expert 0\n").unwrap_err();
        assert!(
            e.0.starts_with("t.txt:2: expert 0 of layer 1 appears twice"),
            "{e}"
        );
        let e = parse("\n\n").unwrap_err();
        assert!(e.0.contains("empty trace"), "{e}");
    }

    #[test]
    fn canonical_text_round_trips() {
        let text = "---began prompt processing---\nlayer 1 expert 0\nlayer 2 expert 3\n---token---\n---ended prompt processing---\nlayer 1 expert 2\nlayer 2 expert 1\n---token---\n";
        let t = parse(text).unwrap();
        let mut out = Vec::new();
        write(&t, 0, &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), text);
    }
}
