//! The seed's chunk analysis (../shared/seed/analyze_experts.py), exactly:
//!
//! - per response, the tokens in order (prompt tokens left out, as the script requires
//!   the prompt blocks removed), cut into chunks of 128, the remainder dropped;
//! - per chunk and threshold t, K = the number of most-used experts whose activations
//!   reach t of the chunk's activations (`cum >= total * t` in f64, as the script),
//!   ties in first-appearance order (Python's `Counter.most_common` is a stable sort);
//! - the new experts of a chunk's top-K set versus the previous chunk's of the same
//!   response;
//! - averages pooled over all chunks (and all consecutive pairs) of all responses.
//!
//! At threshold 1.0 K is U (distinct experts per chunk) and the new count is D.

use serde::Serialize;

use crate::trace::Trace;

/// Tokens per chunk of the U and D statistics (the seed's), where no option sets it.
pub const CHUNK_TOKENS: usize = 128;

pub const THRESHOLDS: [f64; 8] = [0.10, 0.25, 0.50, 0.80, 0.95, 0.99, 0.999, 1.0];
/// The thresholds as the CSV prints them.
pub const THRESHOLD_LABELS: [&str; 8] =
    ["0.1", "0.25", "0.5", "0.8", "0.95", "0.99", "0.999", "1.0"];

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ThresholdRow {
    pub threshold: f64,
    /// Mean K over all chunks.
    pub avg_active: f64,
    /// Mean new experts over all consecutive chunk pairs of a response.
    pub avg_new: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LayerRow {
    pub layer: u16,
    /// Shannon entropy of the layer's expert usage over the analysed tokens, in bits
    /// (log2 of the expert count for perfectly uniform routing).
    pub entropy_bits: f64,
    /// Share of the layer's activations taken by its most used 10% of experts.
    pub top10_share: f64,
    /// Mean distinct experts of this layer per chunk.
    pub avg_active: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Analysis {
    pub chunk_tokens: usize,
    pub responses: usize,
    pub tokens: usize,
    pub chunks: u64,
    pub chunk_pairs: u64,
    pub rows: Vec<ThresholdRow>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_layer: Option<Vec<LayerRow>>,
}

impl Analysis {
    /// Whether D is defined: some response has two consecutive whole chunks (the
    /// seed's script prints 0 new experts where none has, as the rows hold).
    pub fn d_defined(&self) -> bool {
        self.chunk_pairs > 0
    }

    /// U and D: mean distinct and new experts per chunk at threshold 100%.
    pub fn u_d(&self) -> (f64, f64) {
        let last = self.rows.last().expect("rows");
        (last.avg_active, last.avg_new)
    }
}

/// Run the analysis. `include_prompt` keeps prompt tokens (`--phase all`).
pub fn analyze(
    trace: &Trace,
    chunk_tokens: usize,
    include_prompt: bool,
    per_layer: bool,
) -> Analysis {
    assert!(chunk_tokens > 0);
    let g = &trace.geometry;
    let n_ids = g.n_ids();
    let nt = THRESHOLDS.len();
    let mut counts = vec![0u32; n_ids];
    // rank[id] = position in a chunk's most-used order, u32::MAX if unused; two of them
    // (previous and current chunk) swapped after every chunk.
    let mut rank_prev = vec![u32::MAX; n_ids];
    let mut rank_cur = vec![u32::MAX; n_ids];
    let mut order: Vec<u16> = Vec::new();
    let mut prev_order: Vec<u16> = Vec::new();
    let mut prev_k = [0usize; 8];
    let mut sum_k = [0u64; 8];
    let mut sum_new = [0u64; 8];
    let mut chunks = 0u64;
    let mut pairs = 0u64;
    let mut tokens_used = 0usize;
    let mut usage = vec![0u64; if per_layer { n_ids } else { 0 }];
    let mut layer_distinct = vec![0u64; if per_layer { g.n_layers() } else { 0 }];

    let mut selected: Vec<usize> = Vec::new();
    for r in 0..trace.n_responses() {
        selected.clear();
        selected.extend(
            trace
                .response(r)
                .filter(|&t| include_prompt || !trace.prompt[t]),
        );
        tokens_used += selected.len();
        let mut have_prev = false;
        for chunk in selected.chunks_exact(chunk_tokens) {
            // Count, remembering first appearances.
            order.clear();
            let mut total: u64 = 0;
            for &t in chunk {
                for &id in trace.token(t) {
                    let c = &mut counts[id as usize];
                    if *c == 0 {
                        order.push(id);
                    }
                    *c += 1;
                    total += 1;
                }
            }
            // Most used first; a stable sort keeps ties in first-appearance order.
            order.sort_by(|&a, &b| counts[b as usize].cmp(&counts[a as usize]));
            let mut k = [0usize; 8];
            let mut next = 0;
            let mut cum: u64 = 0;
            for (i, &id) in order.iter().enumerate() {
                cum += counts[id as usize] as u64;
                while next < nt && cum as f64 >= total as f64 * THRESHOLDS[next] {
                    k[next] = i + 1;
                    next += 1;
                }
                if next == nt {
                    break;
                }
            }
            for (i, &id) in order.iter().enumerate() {
                rank_cur[id as usize] = i as u32;
            }
            for j in 0..nt {
                sum_k[j] += k[j] as u64;
            }
            chunks += 1;
            if have_prev {
                for j in 0..nt {
                    let fresh = order[..k[j]]
                        .iter()
                        .filter(|&&id| rank_prev[id as usize] as usize >= prev_k[j])
                        .count();
                    sum_new[j] += fresh as u64;
                }
                pairs += 1;
            }
            if per_layer {
                for &id in &order {
                    usage[id as usize] += counts[id as usize] as u64;
                    layer_distinct[id as usize / g.n_experts as usize] += 1;
                }
            }
            // Reset: counts for this chunk, the previous chunk's ranks; then swap.
            for &id in &order {
                counts[id as usize] = 0;
            }
            for &id in &prev_order {
                rank_prev[id as usize] = u32::MAX;
            }
            std::mem::swap(&mut rank_prev, &mut rank_cur);
            std::mem::swap(&mut prev_order, &mut order);
            prev_k = k;
            have_prev = true;
        }
        // Chunks compare only within a response.
        for &id in &prev_order {
            rank_prev[id as usize] = u32::MAX;
        }
        prev_order.clear();
    }

    let avg = |s: u64, n: u64| if n > 0 { s as f64 / n as f64 } else { 0.0 };
    let rows = (0..nt)
        .map(|j| ThresholdRow {
            threshold: THRESHOLDS[j],
            avg_active: avg(sum_k[j], chunks),
            avg_new: avg(sum_new[j], pairs),
        })
        .collect();
    let per_layer = per_layer.then(|| {
        let n = g.n_experts as usize;
        let top = ((n as f64 * 0.1).round() as usize).max(1);
        g.layers
            .iter()
            .enumerate()
            .map(|(slot, &layer)| {
                let mut u: Vec<u64> = usage[slot * n..(slot + 1) * n].to_vec();
                let total: u64 = u.iter().sum();
                let entropy = if total == 0 {
                    0.0
                } else {
                    u.iter()
                        .filter(|&&c| c > 0)
                        .map(|&c| {
                            let p = c as f64 / total as f64;
                            -p * p.log2()
                        })
                        .sum()
                };
                u.sort_unstable_by(|a, b| b.cmp(a));
                let top_sum: u64 = u[..top].iter().sum();
                LayerRow {
                    layer,
                    entropy_bits: entropy,
                    top10_share: if total == 0 {
                        0.0
                    } else {
                        top_sum as f64 / total as f64
                    },
                    avg_active: avg(layer_distinct[slot], chunks),
                }
            })
            .collect()
    });
    Analysis {
        chunk_tokens,
        responses: trace.n_responses(),
        tokens: tokens_used,
        chunks,
        chunk_pairs: pairs,
        rows,
        per_layer,
    }
}

/// The most tokens a response of `trace` replays (prompt tokens with `include_prompt`).
pub fn longest_response(trace: &Trace, include_prompt: bool) -> usize {
    (0..trace.n_responses())
        .map(|r| {
            trace
                .response(r)
                .filter(|&t| include_prompt || !trace.prompt[t])
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// The error when no response of `trace` has a whole `chunk`-token chunk (of the tokens
/// replayed): U and D are undefined, and a table of them would show zeros.
pub fn no_whole_chunk(trace: &Trace, chunk: usize, include_prompt: bool) -> Option<String> {
    let longest = longest_response(trace, include_prompt);
    let prompts_left_out = !include_prompt && trace.prompt.iter().any(|&p| p);
    // --phase all is named only where counting the prompts would make a chunk.
    let prompts_help = prompts_left_out && longest_response(trace, true) >= chunk;
    (longest < chunk).then(|| {
        format!(
            "no response has a whole {chunk}-token chunk (the longest has {longest} tokens{}{}): U and D are undefined; give a smaller --chunk",
            if prompts_left_out { ", prompts left out" } else { "" },
            if prompts_help { ": --phase all counts them" } else { "" }
        )
    })
}

/// U and D alone (threshold 100%): distinct experts per chunk and those new versus the
/// previous chunk of the same response. Equal to `analyze(..).u_d()` without the per-chunk
/// sort that the lower thresholds need.
pub fn u_d(trace: &Trace, chunk_tokens: usize, include_prompt: bool) -> (f64, f64) {
    assert!(chunk_tokens > 0);
    let n_ids = trace.geometry.n_ids();
    // stamp[id] = 2 * chunk number + 1 if used in that chunk; chunk numbers rise, so a
    // stamp of the previous chunk means "used there".
    let mut stamp = vec![0u64; n_ids];
    let (mut sum_u, mut sum_d, mut chunks, mut pairs) = (0u64, 0u64, 0u64, 0u64);
    let mut selected: Vec<usize> = Vec::new();
    let mut serial: u64 = 0;
    for r in 0..trace.n_responses() {
        selected.clear();
        selected.extend(
            trace
                .response(r)
                .filter(|&t| include_prompt || !trace.prompt[t]),
        );
        let first_serial = serial + 1;
        for chunk in selected.chunks_exact(chunk_tokens) {
            serial += 1;
            let (mut u, mut d) = (0u64, 0u64);
            let first = serial == first_serial;
            for &t in chunk {
                for &id in trace.token(t) {
                    // Branch-free: which ids are new in a chunk is data, not a pattern.
                    let s = &mut stamp[id as usize];
                    let fresh = (*s != serial) as u64;
                    u += fresh;
                    d += fresh & ((*s + 1 != serial) | first) as u64;
                    *s = serial;
                }
            }
            sum_u += u;
            chunks += 1;
            if serial != first_serial {
                sum_d += d;
                pairs += 1;
            }
        }
    }
    let avg = |s: u64, n: u64| if n > 0 { s as f64 / n as f64 } else { 0.0 };
    (avg(sum_u, chunks), avg(sum_d, pairs))
}

/// The ubatch sizes of a union-growth curve: 1, 2, 4, ..., 512 (llama.cpp's default
/// ubatch).
pub const UBATCH_SIZES: [usize; 10] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512];

/// Token runs a union curve cuts into ubatches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runs {
    /// The runs of prompt tokens of each response (what a replay cuts into ubatches).
    Prompt,
    /// Each response's tokens whatever their tags (a recording of prompts read as
    /// decode tokens, such as the MoE-Beyond CSV).
    Responses,
}

/// One point of a union curve.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct UnionPoint {
    /// Ubatch size N.
    pub ubatch: usize,
    /// Full ubatches of N tokens measured.
    pub ubatches: usize,
    /// Mean distinct experts per MoE layer in a ubatch (top-k at N = 1, at most the
    /// experts per layer).
    pub union_per_layer: f64,
}

/// How a prompt's union of experts per layer per ubatch grows with the ubatch size:
/// every run (see `Runs`) is cut into ubatches of N consecutive tokens from its start,
/// the last one left out when shorter than N, and the distinct experts of each MoE layer
/// are counted in every ubatch and averaged over ubatches and layers.
/// scripts/union_curve.py computes the same from a trace file.
pub fn union_curve(trace: &Trace, runs: Runs, sizes: &[usize]) -> Vec<UnionPoint> {
    let g = &trace.geometry;
    let (a, n_layers) = (g.accesses_per_token(), g.n_layers());
    let mut spans: Vec<std::ops::Range<usize>> = Vec::new();
    for r in 0..trace.n_responses() {
        let rg = trace.response(r);
        match runs {
            Runs::Responses => spans.push(rg),
            Runs::Prompt => {
                let mut t = rg.start;
                while t < rg.end {
                    if !trace.prompt[t] {
                        t += 1;
                        continue;
                    }
                    let end = (t..rg.end).find(|&u| !trace.prompt[u]).unwrap_or(rg.end);
                    spans.push(t..end);
                    t = end;
                }
            }
        }
    }
    // seen[id] == mark: counted in the current ubatch already.
    let mut seen = vec![0u32; g.n_ids()];
    let mut mark = 0u32;
    sizes
        .iter()
        .map(|&n| {
            assert!(n > 0, "ubatch size 0");
            let (mut ubatches, mut distinct) = (0usize, 0u64);
            for span in &spans {
                let mut t = span.start;
                while t + n <= span.end {
                    // Ids are dense over the layers: distinct ids = the layers' unions.
                    mark += 1;
                    for id in &trace.ids[t * a..(t + n) * a] {
                        let s = &mut seen[*id as usize];
                        distinct += (*s != mark) as u64;
                        *s = mark;
                    }
                    ubatches += 1;
                    t += n;
                }
            }
            UnionPoint {
                ubatch: n,
                ubatches,
                union_per_layer: if ubatches == 0 {
                    0.0
                } else {
                    distinct as f64 / (ubatches * n_layers) as f64
                },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{Geometry, Trace};

    /// One layer, top-1: a token is one expert id.
    fn trace_of(responses: &[&[u16]], n_experts: u16) -> Trace {
        let mut t = Trace::empty(
            Geometry {
                layers: vec![0],
                n_experts,
                top_k: 1,
            },
            true,
        );
        for r in responses {
            t.ids.extend_from_slice(r);
            t.prompt.extend(std::iter::repeat_n(false, r.len()));
            t.end_response();
        }
        t
    }

    #[test]
    fn ties_follow_first_appearance_and_new_counts_compare_within_a_response() {
        // chunk of 4: [3, 1, 1, 3] -> counts 3:2, 1:2, order 3 then 1.
        // chunk 2: [2, 2, 2, 1] -> 2:3, 1:1.
        let t = trace_of(&[&[3, 1, 1, 3, 2, 2, 2, 1, 0]], 4);
        let a = analyze(&t, 4, false, false);
        assert_eq!((a.chunks, a.chunk_pairs), (2, 1));
        // t = 0.1: K = 1 in both chunks; chunk 2's top-1 {2} is new versus {3}.
        assert_eq!(a.rows[0].avg_active, 1.0);
        assert_eq!(a.rows[0].avg_new, 1.0);
        // t = 0.5: chunk 1 needs 1 (2 of 4 >= 2), chunk 2 needs 1.
        assert_eq!(a.rows[2].avg_active, 1.0);
        // t = 0.8: chunk 1 needs 2 (4 >= 3.2), chunk 2 needs 2 ({2, 1}); new = {2}.
        assert_eq!(a.rows[3].avg_active, 2.0);
        assert_eq!(a.rows[3].avg_new, 1.0);
        // U and D.
        assert_eq!(a.u_d(), (2.0, 1.0));
    }

    #[test]
    fn no_whole_chunk_names_phase_all_only_where_the_prompts_make_one() {
        // Three prompt tokens, then two decode tokens.
        let mut t = trace_of(&[&[0, 1, 2, 3, 0]], 4);
        t.prompt[..3].fill(true);
        assert_eq!(no_whole_chunk(&t, 2, false), None);
        assert_eq!(no_whole_chunk(&t, 5, true), None);
        let e = no_whole_chunk(&t, 4, false).unwrap();
        assert!(
            e.contains("(the longest has 2 tokens, prompts left out: --phase all counts them)"),
            "{e}"
        );
        // Prompts and all, five tokens: no chunk of 6 either way, so no hint.
        let e = no_whole_chunk(&t, 6, false).unwrap();
        assert!(
            e.contains("(the longest has 2 tokens, prompts left out):"),
            "{e}"
        );
        let e = no_whole_chunk(&t, 6, true).unwrap();
        assert!(e.contains("(the longest has 5 tokens):"), "{e}");
    }

    #[test]
    fn fast_u_d_equals_the_full_analysis() {
        let mut s = 11u64;
        let mut next = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 33) as u16
        };
        let responses: Vec<Vec<u16>> = (0..6)
            .map(|r| (0..(r * 37 + 5)).map(|_| next() % 9).collect())
            .collect();
        let refs: Vec<&[u16]> = responses.iter().map(|v| &v[..]).collect();
        let mut t = trace_of(&refs, 9);
        for (i, p) in t.prompt.iter_mut().enumerate() {
            *p = i % 7 == 3;
        }
        for chunk in [1, 3, 8, 40] {
            for include_prompt in [false, true] {
                assert_eq!(
                    u_d(&t, chunk, include_prompt),
                    analyze(&t, chunk, include_prompt, false).u_d(),
                    "chunk {chunk}"
                );
            }
        }
    }

    #[test]
    fn prompt_tokens_are_left_out_by_default() {
        let mut t = trace_of(&[&[0, 1, 2, 3]], 4);
        t.prompt[0] = true;
        assert_eq!(analyze(&t, 3, false, false).rows[7].avg_active, 3.0);
        assert_eq!(analyze(&t, 4, true, false).rows[7].avg_active, 4.0);
        assert_eq!(analyze(&t, 4, false, false).chunks, 0);
    }

    #[test]
    fn per_layer_entropy_of_uniform_routing_is_log2_n() {
        let t = trace_of(&[&[0, 1, 2, 3, 0, 1, 2, 3]], 4);
        let a = analyze(&t, 4, false, true);
        let l = &a.per_layer.unwrap()[0];
        assert!((l.entropy_bits - 2.0).abs() < 1e-12);
        assert_eq!(l.top10_share, 0.25);
        assert_eq!(l.avg_active, 4.0);
    }

    #[test]
    fn union_curve_by_hand() {
        // One layer, top-1. Response 1: 3 1 1 3 2 (5 tokens); response 2: 0 0 (2).
        let mut t = trace_of(&[&[3, 1, 1, 3, 2], &[0, 0]], 4);
        // Whole responses: N = 2 cuts [3 1] [1 3] | [0 0]: unions 2, 2, 1; N = 4 takes
        // [3 1 1 3] alone (2); N = 8 finds no full ubatch.
        let c = union_curve(&t, Runs::Responses, &[1, 2, 4, 8]);
        let got: Vec<(usize, f64)> = c.iter().map(|p| (p.ubatches, p.union_per_layer)).collect();
        assert_eq!(got, vec![(7, 1.0), (3, 5.0 / 3.0), (1, 2.0), (0, 0.0)]);
        // Prompt runs: tokens 1..4 of response 1 ([1 1 3]) and all of response 2.
        t.prompt = vec![false, true, true, true, false, true, true];
        let c = union_curve(&t, Runs::Prompt, &[2, 3]);
        // N = 2: [1 1] | [0 0]: unions 1, 1; N = 3: [1 1 3]: 2.
        assert_eq!((c[0].ubatches, c[0].union_per_layer), (2, 1.0));
        assert_eq!((c[1].ubatches, c[1].union_per_layer), (1, 2.0));
    }
}
