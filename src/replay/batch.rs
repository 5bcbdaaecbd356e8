//! Batches: what the cache sees when prompts are processed in ubatches (llama.cpp `-ub`)
//! and several responses decode in lock step (llama-server `-np`). docs/batches.md
//! states the semantics; in short:
//!
//! - A step is one forward pass: a prompt ubatch (up to `ubatch` consecutive prompt
//!   tokens of one response) or a decode step (the current decode token of each of up to
//!   `parallel` responses).
//! - Within a step, layer by layer in order, the cache sees each expert that any of the
//!   step's tokens routes to in that layer once, in order of first use (tokens in order,
//!   then each token's experts in router order).
//! - Responses take `parallel` places in order; a place whose next token starts a run of
//!   prompt tokens processes the whole run in ubatches before the next decode step; a
//!   response that ends gives its place to the next response.
//!
//! [`schedule`] walks the steps (which tokens each carries) without touching ids;
//! [`build`] turns them into the deduplicated access stream and the step boundaries the
//! engines take, with a per-id epoch array for the deduplication (no hashing, nothing
//! allocated per access).

use crate::trace::Trace;

/// How tokens are grouped into steps. `ubatch 1, parallel 1` is the replay token by
/// token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batching {
    /// Prompt tokens per ubatch (llama.cpp `-ub`), at least 1.
    pub ubatch: usize,
    /// Responses decoded in lock step (llama-server `-np`), at least 1.
    pub parallel: usize,
    /// Replay only the first N tokens of every run of prompt tokens (`--prompt-tokens`:
    /// prompts of one length); None: whole runs.
    pub prompt_cut: Option<usize>,
}

/// llama.cpp's default physical batch (`-ub`).
pub const DEFAULT_UBATCH: usize = 512;

impl Batching {
    /// Token by token: every step one token.
    pub const TOKEN_BY_TOKEN: Batching = Batching {
        ubatch: 1,
        parallel: 1,
        prompt_cut: None,
    };

    /// Whether every step of `trace`'s replay is one token (nothing to batch): one
    /// response at a time, and no prompt token replayed in ubatches of more than one.
    pub fn is_token_by_token(&self, trace: &Trace, include_prompt: bool) -> bool {
        let prompts = include_prompt && trace.prompt.iter().any(|&p| p);
        self.parallel <= 1 && (!prompts || (self.ubatch <= 1 && self.prompt_cut.is_none()))
    }
}

/// The steps of a batched replay, with their place in the access stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Steps {
    /// Stream position where each step starts, and the stream's length at the end
    /// (n_steps + 1 entries).
    pub starts: Vec<usize>,
    /// Tokens each step carries.
    pub tokens: Vec<u32>,
    /// Whether each step is a prompt ubatch (otherwise a decode step).
    pub prompt: Vec<bool>,
    /// Accesses of every replayed slot in every step (that slot's union of experts):
    /// `slot_lens[step * n_slots + s]`.
    pub slot_lens: Vec<u16>,
    /// Per step: the prompt tokens of its run before it (0 at a run's first ubatch, and
    /// for decode steps), what the time to first token of a prompt length counts.
    pub offsets: Vec<u32>,
}

impl Steps {
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// Responses that have at least one token to replay.
pub fn replayed_responses(trace: &Trace, include_prompt: bool) -> usize {
    (0..trace.n_responses())
        .filter(|&r| {
            trace
                .response(r)
                .any(|t| include_prompt || !trace.prompt[t])
        })
        .count()
}

/// The longest run of prompt tokens in any response (0 without prompt tokens).
pub fn longest_prompt_run(trace: &Trace) -> usize {
    let positions = prompt_positions(trace);
    (0..trace.n_tokens())
        .filter(|&t| trace.prompt[t])
        .map(|t| positions[t] as usize + 1)
        .max()
        .unwrap_or(0)
}

/// Per token: the prompt tokens before it in its run of consecutive prompt tokens of
/// one response (0 for the first, and for decode tokens).
pub fn prompt_positions(trace: &Trace) -> Vec<u32> {
    let mut pos = vec![0u32; trace.n_tokens()];
    for r in 0..trace.n_responses() {
        let mut run = 0u32;
        for t in trace.response(r) {
            if trace.prompt[t] {
                pos[t] = run;
                run += 1;
            } else {
                run = 0;
            }
        }
    }
    pos
}

/// Walk the steps of `trace`'s replay in order: `visit(prompt, tokens)` for each, with
/// the tokens it carries (indices into the trace) in order.
pub fn schedule(
    trace: &Trace,
    include_prompt: bool,
    b: Batching,
    mut visit: impl FnMut(bool, &[usize]),
) {
    let replayed = |t: usize| include_prompt || !trace.prompt[t];
    // The next replayed token at or after `t`, before `end`.
    let skip = |mut t: usize, end: usize| {
        while t < end && !replayed(t) {
            t += 1;
        }
        t
    };
    let mut next_response = 0;
    let mut take_next = || {
        while next_response < trace.n_responses() {
            let rg = trace.response(next_response);
            next_response += 1;
            let t = skip(rg.start, rg.end);
            if t < rg.end {
                return Some((t, rg.end));
            }
        }
        None
    };
    let ubatch = b.ubatch.max(1);
    // Each place: (next token, end of its response).
    let mut places: Vec<Option<(usize, usize)>> =
        (0..b.parallel.max(1)).map(|_| take_next()).collect();
    let mut tokens: Vec<usize> = Vec::new();
    loop {
        // Prompt runs first: a place whose next token is a prompt token processes the
        // run in ubatches; a response that ends there gives its place to the next one.
        for place in places.iter_mut() {
            while let Some((t, end)) = *place {
                if t == end {
                    *place = take_next();
                    continue;
                }
                if !trace.prompt[t] {
                    break;
                }
                let run_end = (t..end).find(|&u| !trace.prompt[u]).unwrap_or(end);
                // --prompt-tokens: the run's tokens past the cut are not replayed.
                let cut_end = b.prompt_cut.map_or(run_end, |n| run_end.min(t + n));
                let mut u = t;
                while u < cut_end {
                    let v = (u + ubatch).min(cut_end);
                    tokens.clear();
                    tokens.extend(u..v);
                    visit(true, &tokens);
                    u = v;
                }
                *place = Some((skip(run_end, end), end));
            }
        }
        // Then one decode step: the current token of every place, in place order.
        tokens.clear();
        tokens.extend(places.iter().flatten().map(|&(t, _)| t));
        if tokens.is_empty() {
            return;
        }
        visit(false, &tokens);
        for place in places.iter_mut() {
            if let Some((t, end)) = *place {
                let next = skip(t + 1, end);
                *place = if next == end {
                    take_next()
                } else {
                    Some((next, end))
                };
            }
        }
    }
}

/// The deduplicated access stream of `trace`'s replay under `b` (slots from
/// `first_slot` on) and its steps.
pub fn build(
    trace: &Trace,
    include_prompt: bool,
    first_slot: usize,
    b: Batching,
) -> (Vec<u16>, Steps) {
    build_slots(
        trace,
        include_prompt,
        first_slot..trace.geometry.n_layers(),
        b,
    )
}

/// The same for the slots of `slots` only (the MoE layers that reach the cache).
pub fn build_slots(
    trace: &Trace,
    include_prompt: bool,
    slots: std::ops::Range<usize>,
    b: Batching,
) -> (Vec<u16>, Steps) {
    let g = &trace.geometry;
    let k = g.top_k as usize;
    let a = g.accesses_per_token();
    let mut stream: Vec<u16> = Vec::with_capacity(trace.n_accesses());
    let mut steps = Steps {
        starts: vec![0],
        ..Steps::default()
    };
    // seen[id] == epoch: the id is in the current step already.
    let mut seen = vec![0u32; g.n_ids()];
    let mut epoch = 0u32;
    let ids: &[u16] = &trace.ids;
    let positions = prompt_positions(trace);
    schedule(trace, include_prompt, b, |prompt, tokens| {
        epoch = match epoch.checked_add(1) {
            Some(e) => e,
            None => {
                seen.iter_mut().for_each(|s| *s = 0);
                1
            }
        };
        for s in slots.clone() {
            let before = stream.len();
            for &t in tokens {
                let at = t * a + s * k;
                for &id in &ids[at..at + k] {
                    let mark = &mut seen[id as usize];
                    if *mark != epoch {
                        *mark = epoch;
                        stream.push(id);
                    }
                }
            }
            steps.slot_lens.push((stream.len() - before) as u16);
        }
        steps.starts.push(stream.len());
        steps.tokens.push(tokens.len() as u32);
        steps.prompt.push(prompt);
        steps
            .offsets
            .push(if prompt { positions[tokens[0]] } else { 0 });
    });
    (stream, steps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::Geometry;

    /// 2 layers x 4 experts, top-2: ids are `slot * 4 + expert`.
    fn geo() -> Geometry {
        Geometry {
            layers: vec![1, 2],
            n_experts: 4,
            top_k: 2,
        }
    }

    /// A token: whether prompt, its layer 1 experts, its layer 2 experts.
    type Token = (bool, [u16; 2], [u16; 2]);

    /// A trace from responses of tokens.
    fn trace(responses: &[&[Token]]) -> Trace {
        let mut t = Trace::empty(geo(), true);
        for r in responses {
            for &(p, l1, l2) in r.iter() {
                t.ids
                    .extend_from_slice(&[l1[0], l1[1], 4 + l2[0], 4 + l2[1]]);
                t.prompt.push(p);
            }
            t.end_response();
        }
        t
    }

    const P: bool = true;
    const D: bool = false;

    #[test]
    fn ubatches_by_hand() {
        // One response: 3 prompt tokens, 2 decode tokens.
        let t = trace(&[&[
            (P, [3, 1], [0, 2]),
            (P, [1, 0], [2, 3]),
            (P, [2, 3], [2, 0]),
            (D, [0, 1], [1, 2]),
            (D, [0, 2], [3, 1]),
        ]]);
        let b = Batching {
            ubatch: 2,
            parallel: 1,
            prompt_cut: None,
        };
        let (stream, steps) = build(&t, true, 0, b);
        // Ubatch 1 (tokens 0, 1): layer 1 sees 3, 1 (token 0), then 0 (token 1: 1 again
        // is not seen twice); layer 2 sees 0, 2, then 3 (ids 4 + e).
        // Ubatch 2 (token 2): 2, 3 | 2, 0. Then the decode tokens one by one.
        #[rustfmt::skip]
        let want: Vec<u16> = vec![
            3, 1, 0,   4, 6, 7,
            2, 3,      6, 4,
            0, 1,      5, 6,
            0, 2,      7, 5,
        ];
        assert_eq!(stream, want);
        assert_eq!(steps.starts, vec![0, 6, 10, 14, 18]);
        assert_eq!(steps.tokens, vec![2, 1, 1, 1]);
        assert_eq!(steps.prompt, vec![P, P, D, D]);
        assert_eq!(steps.offsets, vec![0, 2, 0, 0]);
        assert_eq!(steps.slot_lens, vec![3, 3, 2, 2, 2, 2, 2, 2]);
        // From the second slot only (the first in VRAM): the same steps, slot 2 only.
        let (stream, steps) = build(&t, true, 1, b);
        assert_eq!(stream, vec![4, 6, 7, 6, 4, 5, 6, 7, 5]);
        assert_eq!(steps.slot_lens, vec![3, 2, 2, 2]);
        // Without the prompt phase nothing is batched: the decode tokens alone.
        let (stream, steps) = build(&t, false, 0, b);
        assert_eq!(stream, vec![0, 1, 5, 6, 0, 2, 7, 5]);
        assert_eq!(steps.tokens, vec![1, 1]);
    }

    #[test]
    fn union_keeps_the_order_of_first_use() {
        // Four prompt tokens in one ubatch: layer 1 routes 2 3 | 1 2 | 0 3 | 1 0: the
        // union in order of first use is 2 3 1 0, not sorted.
        let t = trace(&[&[
            (P, [2, 3], [0, 1]),
            (P, [1, 2], [0, 1]),
            (P, [0, 3], [0, 1]),
            (P, [1, 0], [1, 0]),
        ]]);
        let (stream, steps) = build(
            &t,
            true,
            0,
            Batching {
                ubatch: 8,
                parallel: 1,
                prompt_cut: None,
            },
        );
        assert_eq!(stream, vec![2, 3, 1, 0, 4, 5]);
        assert_eq!(steps.tokens, vec![4]);
        assert_eq!(steps.slot_lens, vec![4, 2]);
    }

    #[test]
    fn parallel_responses_by_hand() {
        // Three responses of 3, 1 and 2 decode tokens (A, B, C), two places: step 1
        // carries A0 B0; B ends and C takes its place: step 2 A1 C0, step 3 A2 C1.
        let t = trace(&[
            &[
                (D, [0, 1], [0, 1]),
                (D, [0, 2], [0, 1]),
                (D, [3, 1], [2, 1]),
            ],
            &[(D, [1, 2], [3, 1])],
            &[(D, [2, 0], [0, 3]), (D, [3, 2], [1, 2])],
        ]);
        let b = Batching {
            ubatch: 512,
            parallel: 2,
            prompt_cut: None,
        };
        let (stream, steps) = build(&t, false, 0, b);
        #[rustfmt::skip]
        let want: Vec<u16> = vec![
            0, 1, 2,   4, 5, 7,   // A0 = 0 1 | 0 1, B0 = 1 2 | 3 1
            0, 2,      4, 5, 7,   // A1 = 0 2 | 0 1, C0 = 2 0 | 0 3
            3, 1, 2,   6, 5,      // A2 = 3 1 | 2 1, C1 = 3 2 | 1 2
        ];
        assert_eq!(stream, want);
        assert_eq!(steps.tokens, vec![2, 2, 2]);
        assert_eq!(steps.prompt, vec![D, D, D]);
        assert_eq!(steps.slot_lens, vec![3, 3, 2, 3, 3, 2]);
        // Three places: the first step carries all three, then A and C, then A alone.
        let (_, steps) = build(&t, false, 0, Batching { parallel: 3, ..b });
        assert_eq!(steps.tokens, vec![3, 2, 1]);
    }

    #[test]
    fn prompt_runs_go_before_the_next_decode_step() {
        // A: prompt 2 tokens, decode 2; B: prompt 1, decode 1; two places, ubatch 4.
        // A's prompt ubatch, B's prompt ubatch, then the decode steps A0 B0 and A1.
        let t = trace(&[
            &[
                (P, [0, 1], [0, 1]),
                (P, [1, 2], [0, 1]),
                (D, [3, 0], [2, 3]),
                (D, [3, 2], [2, 3]),
            ],
            &[(P, [2, 3], [3, 2]), (D, [0, 1], [1, 0])],
        ]);
        let b = Batching {
            ubatch: 4,
            parallel: 2,
            prompt_cut: None,
        };
        let mut seen: Vec<(bool, Vec<usize>)> = Vec::new();
        schedule(&t, true, b, |p, tok| seen.push((p, tok.to_vec())));
        assert_eq!(
            seen,
            vec![(P, vec![0, 1]), (P, vec![4]), (D, vec![2, 5]), (D, vec![3]),]
        );
        // --phase decode: prompt tokens are not replayed at all.
        seen.clear();
        schedule(&t, false, b, |p, tok| seen.push((p, tok.to_vec())));
        assert_eq!(seen, vec![(D, vec![2, 5]), (D, vec![3])]);
    }

    #[test]
    fn token_by_token_is_the_trace_order() {
        let t = crate::replay::tests::toy(700, 3);
        for include_prompt in [false, true] {
            let (stream, steps) = build(&t, include_prompt, 0, Batching::TOKEN_BY_TOKEN);
            let want: Vec<u16> = (0..t.n_tokens())
                .filter(|&i| include_prompt || !t.prompt[i])
                .flat_map(|i| t.token(i).to_vec())
                .collect();
            assert_eq!(stream, want);
            assert!(steps.tokens.iter().all(|&n| n == 1));
            assert_eq!(steps.len(), t.n_replayed(include_prompt));
        }
    }

    #[test]
    fn prompt_positions_restart_at_every_run() {
        // A: P P D P D; B: P P. A's second prompt block starts a new run, and so does
        // B's prompt though it follows A's tokens directly.
        let tok = |p| (p, [0, 1], [0, 1]);
        let t = trace(&[&[tok(P), tok(P), tok(D), tok(P), tok(D)], &[tok(P), tok(P)]]);
        assert_eq!(prompt_positions(&t), vec![0, 1, 0, 0, 0, 0, 1]);
        let (_, steps) = build(
            &t,
            true,
            0,
            Batching {
                ubatch: 1,
                parallel: 1,
                prompt_cut: None,
            },
        );
        assert_eq!(steps.offsets, vec![0, 1, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn a_prompt_cut_replays_the_first_tokens_of_every_run() {
        // A: P P P P P D; B: P P D. Cut at 3, ubatch 2: A's run gives ubatches [0 1] [2]
        // (tokens 3 and 4 are not replayed), B's run [6 7] stays whole.
        let tok = |p| (p, [0, 1], [0, 1]);
        let t = trace(&[
            &[tok(P), tok(P), tok(P), tok(P), tok(P), tok(D)],
            &[tok(P), tok(P), tok(D)],
        ]);
        let b = Batching {
            ubatch: 2,
            parallel: 1,
            prompt_cut: Some(3),
        };
        assert!(!b.is_token_by_token(&t, true));
        let mut seen: Vec<(bool, Vec<usize>)> = Vec::new();
        schedule(&t, true, b, |p, tok| seen.push((p, tok.to_vec())));
        assert_eq!(
            seen,
            vec![
                (P, vec![0, 1]),
                (P, vec![2]),
                (D, vec![5]),
                (P, vec![6, 7]),
                (D, vec![8])
            ]
        );
        let (_, steps) = build(&t, true, 0, b);
        assert_eq!(steps.offsets, vec![0, 2, 0, 0, 0]);
    }
}
