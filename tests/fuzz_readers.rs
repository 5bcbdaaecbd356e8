//! Property-based fuzzing of the trace readers and writers (issue 18), as ordinary tests
//! with a bounded number of cases (a few seconds each in a release test build).
//!
//! - every reader, on arbitrary bytes and on mutations of valid files, returns a trace or
//!   a one-line error naming the file, and never panics;
//! - no single allocation is much larger than the input (a header claiming huge counts is
//!   refused before allocating them): a counting allocator records the largest request;
//! - text -> .mst -> text is the identity on valid traces (the `convert` round trip);
//! - a replay of any valid trace counts no more misses than accesses, at least the cold
//!   misses, and exactly them when everything fits.
//!
//! `PROPTEST_CASES` overrides the case counts (e.g. 100000 for a long local run).

use std::alloc::{GlobalAlloc, Layout as AllocLayout, System};
use std::cell::Cell;
use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::Config;

use moe_spill::error::Error;
use moe_spill::format::{self, binary, forum, moe_beyond, Layout};
use moe_spill::replay::{run_policy, Partition, ReplayPlan};
use moe_spill::trace::{Geometry, Trace};
use moe_spill_policies::registry::PolicySpec;

// ---- the largest allocation a thread asks for ----

struct Counting;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: AllocLayout) -> *mut u8 {
        note(l.size());
        System.alloc(l)
    }
    unsafe fn alloc_zeroed(&self, l: AllocLayout) -> *mut u8 {
        note(l.size());
        System.alloc_zeroed(l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: AllocLayout, new: usize) -> *mut u8 {
        note(new);
        System.realloc(p, l, new)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: AllocLayout) {
        System.dealloc(p, l)
    }
}

fn note(size: usize) {
    // try_with: nothing to record while a thread is being torn down.
    let _ = LARGEST.try_with(|m| m.set(m.get().max(size)));
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Run `f`, returning its result and the largest single allocation it made (this thread).
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|m| m.set(0));
    let out = f();
    (out, LARGEST.with(|m| m.get()))
}

/// Readers may allocate their fixed buffers (the text readers' 1 MiB block) and a
/// small multiple of the input; never what a header merely claims.
fn allocation_bound(input: usize) -> usize {
    (4 << 20) + 16 * input
}

fn cases(n: u32) -> Config {
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(n);
    Config {
        cases: n,
        failure_persistence: None,
        ..Config::default()
    }
}

/// A trace or a one-line error naming the file; a trace must be valid.
fn one_line(r: &Result<Trace, Error>, name: &str) -> Result<(), TestCaseError> {
    match r {
        Err(e) => {
            prop_assert!(
                !e.0.contains('\n'),
                "a message of more than one line: {:?}",
                e.0
            );
            prop_assert!(
                e.0.starts_with(name),
                "the message does not name the file: {}",
                e.0
            );
        }
        Ok(t) => valid(t)?,
    }
    Ok(())
}

/// What FORMATS.md promises of every trace a reader returns.
fn valid(t: &Trace) -> Result<(), TestCaseError> {
    let g = &t.geometry;
    let (k, n) = (g.top_k as usize, g.n_experts);
    prop_assert!(
        g.n_layers() > 0 && k > 0 && n as usize >= k,
        "{}",
        g.describe()
    );
    prop_assert!(g.n_ids() <= 1 << 16, "{}", g.describe());
    let mut layers = g.layers.clone();
    layers.sort_unstable();
    layers.dedup();
    prop_assert_eq!(layers.len(), g.n_layers(), "repeated layer numbers");
    prop_assert_eq!(t.ids.len(), t.n_tokens() * g.accesses_per_token());
    prop_assert_eq!(t.response_starts.first(), Some(&0));
    prop_assert_eq!(t.response_starts.last(), Some(&t.n_tokens()));
    prop_assert!(
        t.response_starts.windows(2).all(|w| w[0] < w[1]),
        "an empty response"
    );
    for tok in 0..t.n_tokens() {
        for (slot, experts) in t.token(tok).chunks_exact(k).enumerate() {
            for (i, &id) in experts.iter().enumerate() {
                prop_assert_eq!(
                    id as usize / n as usize,
                    slot,
                    "id {} outside its layer",
                    id
                );
                prop_assert!(!experts[..i].contains(&id), "id {} twice in a token", id);
            }
        }
    }
    Ok(())
}

fn read_text(bytes: &[u8], hint: Option<&Layout>) -> Result<Trace, Error> {
    forum::read(Path::new("f.txt"), bytes, hint, None, None)
}

fn read_csv(bytes: &[u8]) -> Result<Trace, Error> {
    moe_beyond::read(Path::new("f.csv"), bytes, None)
}

fn read_mst(bytes: &[u8], streamed: bool) -> Result<Trace, Error> {
    let size = (!streamed).then_some(bytes.len() as u64);
    binary::read(Path::new("f.mst"), bytes, size)
}

/// Every reader on the same bytes: a trace or a one-line error, bounded allocations.
fn all_readers(bytes: &[u8]) -> Result<(), TestCaseError> {
    let bound = allocation_bound(bytes.len());
    let (r, max) = largest_allocation(|| read_text(bytes, None));
    one_line(&r, "f.txt")?;
    prop_assert!(max <= bound, "forum reader allocated {max} bytes at once");
    let (r, max) = largest_allocation(|| read_csv(bytes));
    one_line(&r, "f.csv")?;
    prop_assert!(max <= bound, "CSV reader allocated {max} bytes at once");
    for streamed in [false, true] {
        let (r, max) = largest_allocation(|| read_mst(bytes, streamed));
        one_line(&r, "f.mst")?;
        prop_assert!(max <= bound, ".mst reader allocated {max} bytes at once");
    }
    Ok(())
}

// ---- valid traces ----

/// A valid trace: distinct layer numbers, top-k distinct experts per layer and token,
/// 1..3 responses, prompt tokens anywhere except that the first response has a decode
/// token (text alone cannot tell the layout of a file of prompt tokens only).
fn valid_trace() -> impl Strategy<Value = Trace> {
    (1usize..5, 1u16..5, 0u16..40)
        .prop_flat_map(|(n_layers, top_k, extra)| {
            let n_experts = top_k + extra;
            let layers = prop::collection::hash_set(any::<u16>(), n_layers)
                .prop_map(|s| s.into_iter().collect::<Vec<u16>>())
                .prop_shuffle();
            let token = prop::collection::vec(
                Just((0..n_experts).collect::<Vec<u16>>()).prop_shuffle(),
                n_layers,
            );
            let responses =
                prop::collection::vec(prop::collection::vec((token, any::<bool>()), 1..12), 1..4);
            (layers, Just(n_experts), Just(top_k), responses)
        })
        .prop_map(|(layers, n_experts, top_k, mut responses)| {
            responses[0][0].1 = false;
            let g = Geometry {
                layers,
                n_experts,
                top_k,
            };
            let mut t = Trace::empty(g, false);
            let mut ids = Vec::new();
            for r in responses {
                for (token, prompt) in r {
                    for (slot, experts) in token.iter().enumerate() {
                        ids.extend(
                            experts[..top_k as usize]
                                .iter()
                                .map(|e| slot as u16 * n_experts + e),
                        );
                    }
                    t.prompt.push(prompt);
                }
                t.end_response();
            }
            t.ids = ids.into();
            t
        })
}

/// The trace's responses as canonical text files.
fn texts(t: &Trace) -> Vec<Vec<u8>> {
    (0..t.n_responses())
        .map(|r| {
            let mut out = Vec::new();
            forum::write(t, r, &mut out).unwrap();
            out
        })
        .collect()
}

fn mst_bytes(t: &Trace) -> Vec<u8> {
    let mut out = Vec::new();
    binary::write(t, &mut out).unwrap();
    out
}

/// A CSV of the trace's first response (decode tokens only: the format has no phases).
fn csv_text(t: &Trace) -> Vec<u8> {
    let g = &t.geometry;
    let k = g.top_k as usize;
    let mut s = String::from("Layer ID,Batch Number,Token,Activated Expert IDs\n");
    for (slot, layer) in g.layers.iter().enumerate() {
        for tok in t.response(0) {
            let e: Vec<String> = t.token(tok)[slot * k..(slot + 1) * k]
                .iter()
                .map(|&id| t.split_id(id).1.to_string())
                .collect();
            s += &format!("{layer},0,\"t,{tok}\",\"[{}]\"\n", e.join(", "));
        }
    }
    s.into_bytes()
}

/// Change a valid file a little: flip, set, insert or delete bytes, or cut it short.
fn mutated(valid: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let edit = (0u8..5, any::<prop::sample::Index>(), any::<u8>());
    (valid, prop::collection::vec(edit, 1..6)).prop_map(|(mut b, edits)| {
        for (kind, at, byte) in edits {
            if b.is_empty() {
                b.push(byte);
                continue;
            }
            let i = at.index(b.len());
            match kind {
                0 => b[i] ^= 1 << (byte % 8),
                1 => b[i] = byte,
                2 => b.insert(i, byte),
                3 => {
                    b.remove(i);
                }
                _ => b.truncate(i),
            }
        }
        b
    })
}

/// Load text files as `format::load_files` does: each file's layout the next one's hint.
fn read_texts(files: &[Vec<u8>]) -> Result<Trace, Error> {
    let mut out: Option<Trace> = None;
    for f in files {
        let hint = out.as_ref().map(|t| Layout::of(&t.geometry));
        let t = read_text(f, hint.as_ref())?;
        out = Some(match out {
            None => t,
            Some(acc) => Trace::concat(acc, t, "f.txt")?,
        });
    }
    Ok(out.expect("at least one file"))
}

/// A .mst header (valid magic and version) with arbitrary counts, and a few body bytes.
fn claimed_header() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<[u16; 4]>(),
        any::<u32>(),
        prop_oneof![any::<u64>(), Just(u64::MAX), 1u64..1000],
        any::<u64>(),
        prop::collection::vec(any::<u8>(), 0..256),
    )
        .prop_map(|(h, n_responses, n_tokens, sum, body)| {
            let mut b = binary::MAGIC.to_vec();
            b.extend_from_slice(&binary::VERSION.to_le_bytes());
            for v in h {
                b.extend_from_slice(&v.to_le_bytes());
            }
            b.extend_from_slice(&n_responses.to_le_bytes());
            b.extend_from_slice(&n_tokens.to_le_bytes());
            b.extend_from_slice(&sum.to_le_bytes());
            b.extend_from_slice(&body);
            b
        })
}

proptest! {
    #![proptest_config(cases(10_000))]

    #[test]
    fn readers_take_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        all_readers(&bytes)?;
    }
}

proptest! {
    #![proptest_config(cases(4000))]

    #[test]
    fn readers_take_arbitrary_lines(lines in prop::collection::vec(
        prop_oneof![
            "layer [0-9]{1,6} expert [0-9]{1,6}",
            "layer [0-9] expert 6553[0-9]",
            "[ \t]*layer[ \t]+[0-9]{1,3}[ \t]+expert[ \t]+-?[0-9]{1,3}[ \t\r]*",
            Just("---token---".to_string()),
            Just("---began prompt processing---".to_string()),
            Just("---ended prompt processing---".to_string()),
            "[0-9]{1,6},[0-9],\"?[a-z,]{0,3}\"?,\"\\[[0-9, -]{0,12}\\]\"",
            "[0-9],0,a,\"\\[6553[0-9], [0-9]\\]\"",
            Just("Layer ID,Batch Number,Token,Activated Expert IDs".to_string()),
            "\\PC{0,12}",
        ],
        0..40,
    )) {
        let text = lines.join("\n");
        all_readers(text.as_bytes())?;
        let csv = format!("Layer ID,Batch Number,Token,Activated Expert IDs\n{text}");
        all_readers(csv.as_bytes())?;
    }
}

proptest! {
    #![proptest_config(cases(5000))]

    #[test]
    fn mutated_text_is_read_or_refused(bytes in mutated(valid_trace().prop_map(|t| texts(&t).remove(0)))) {
        all_readers(&bytes)?;
    }

    #[test]
    fn mutated_csv_is_read_or_refused(bytes in mutated(valid_trace().prop_map(|t| csv_text(&t)))) {
        all_readers(&bytes)?;
    }

    #[test]
    fn mutated_mst_is_read_or_refused(bytes in mutated(valid_trace().prop_map(|t| mst_bytes(&t)))) {
        all_readers(&bytes)?;
    }

    /// Bad content behind a good checksum: the binary reader's own checks (ids in their
    /// layer, distinct experts and layers, response lengths) must catch it.
    #[test]
    fn mst_with_a_good_checksum_but_bad_content(
        t in valid_trace(),
        ids in prop::collection::vec((any::<prop::sample::Index>(), any::<u16>()), 0..4),
        layer in prop::option::of((any::<prop::sample::Index>(), any::<u16>())),
    ) {
        let mut bad = t.clone();
        for (at, id) in ids {
            let i = at.index(bad.ids.len());
            bad.ids[i] = id % (bad.geometry.n_ids() as u16 + 2);
        }
        if let Some((at, l)) = layer {
            let i = at.index(bad.geometry.n_layers());
            bad.geometry.layers[i] = l % 8;
        }
        let bytes = mst_bytes(&bad);
        for streamed in [false, true] {
            let r = read_mst(&bytes, streamed);
            one_line(&r, "f.mst")?;
            if let Ok(back) = r {
                // Accepted: then it is a valid trace, which text reads back the same.
                prop_assert_eq!(&back, &bad);
                let again = read_texts(&texts(&back)).map_err(|e| TestCaseError::fail(e.0))?;
                prop_assert_eq!(again.ids.len(), back.ids.len());
            }
        }
    }

    /// Headers claiming huge counts are refused without allocating them.
    #[test]
    fn mst_header_counts_are_checked_before_allocating(bytes in claimed_header()) {
        all_readers(&bytes)?;
    }

    /// `convert`'s round trip: text -> .mst -> text is the identity on valid traces, and
    /// the binary writer and reader agree on the trace itself.
    #[test]
    fn text_to_mst_to_text_is_identity(t in valid_trace()) {
        let files = texts(&t);
        let from_text = read_texts(&files).map_err(|e| TestCaseError::fail(e.0))?;
        let bytes = mst_bytes(&from_text);
        let from_mst = read_mst(&bytes, false).map_err(|e| TestCaseError::fail(e.0))?;
        prop_assert_eq!(&from_mst, &from_text);
        prop_assert_eq!(texts(&from_mst), files);
        prop_assert_eq!(read_mst(&mst_bytes(&t), true).map_err(|e| TestCaseError::fail(e.0))?, t.clone());
        // The CSV of the first response reads as its tokens, all decode.
        let csv = read_csv(&csv_text(&t)).map_err(|e| TestCaseError::fail(e.0))?;
        prop_assert_eq!(csv.n_tokens(), t.response(0).len());
        prop_assert!(csv.prompt.iter().all(|&p| !p));
    }

}

proptest! {
    // Temporary files: fewer cases.
    #![proptest_config(cases(300))]

    /// Through a file (mapped where the platform maps): the same trace as the stream.
    #[test]
    fn mst_files_read_as_their_bytes(t in valid_trace()) {
        use std::io::Write;
        let bytes = mst_bytes(&t);
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&bytes).unwrap();
        f.flush().unwrap();
        let filed = format::read_file(f.path(), None, None, None).map_err(|e| TestCaseError::fail(e.0))?;
        prop_assert_eq!(filed, t);
    }

}

proptest! {
    #![proptest_config(cases(5000))]

    /// A replay never panics and its counts add up: misses per token at most the
    /// token's accesses (hits = accesses - misses >= 0), the slots' misses sum to the
    /// tokens', every first use misses, and a cache holding every id misses nothing else.
    #[test]
    fn replay_counts_add_up(
        t in valid_trace(),
        policy in prop::sample::select(vec!["lru", "fifo", "clock", "arc", "lfu", "sieve", "s3fifo", "linux", "opt", "pinned:1"]),
        capacity in 1usize..64,
        prompt in any::<bool>(),
    ) {
        let spec = PolicySpec::parse(policy).unwrap();
        let plan = ReplayPlan::new(&t, prompt, 0);
        let n_ids = plan.n_ids;
        // pinned:1 needs room for the first layer's experts and one more.
        let least = if policy == "pinned:1" { plan.n_experts + 1 } else { 1 };
        for cap in [capacity.max(least), n_ids.max(least)] {
            let counts = run_policy(&plan, &spec, cap, Partition::Global, None, 0)
                .map_err(|e| TestCaseError::fail(e.0))?;
            prop_assert_eq!(counts.misses_per_step.len(), plan.n_steps);
            let misses: u64 = counts.misses_per_step.iter().map(|&m| m as u64).sum();
            prop_assert!(counts.misses_per_step.iter().all(|&m| m as usize <= plan.per_token));
            prop_assert_eq!(counts.misses_per_slot.iter().sum::<u64>(), misses);
            let accesses = (plan.n_tokens * plan.per_token) as u64;
            let hits = accesses - misses;
            prop_assert_eq!(hits + misses, accesses);
            prop_assert!(misses >= plan.cold_misses(0));
            if cap >= n_ids {
                prop_assert_eq!(misses, plan.cold_misses(0), "{} at capacity {}", policy, cap);
            }
        }
    }
}

// ---- the GGUF reader (`--gguf`) ----

/// A small valid GGUF (version 3): metadata of several types, arrays of strings, of
/// integers and of arrays, and two tensors.
fn gguf_file() -> Vec<u8> {
    fn s(b: &mut Vec<u8>, x: &str) {
        b.extend_from_slice(&(x.len() as u64).to_le_bytes());
        b.extend_from_slice(x.as_bytes());
    }
    let u32_ = |b: &mut Vec<u8>, x: u32| b.extend_from_slice(&x.to_le_bytes());
    let u64_ = |b: &mut Vec<u8>, x: u64| b.extend_from_slice(&x.to_le_bytes());
    let mut b = b"GGUF".to_vec();
    u32_(&mut b, 3);
    u64_(&mut b, 2);
    u64_(&mut b, 7);
    s(&mut b, "general.architecture");
    u32_(&mut b, 8);
    s(&mut b, "llama");
    s(&mut b, "general.alignment");
    u32_(&mut b, 4);
    u32_(&mut b, 32);
    s(&mut b, "llama.block_count");
    u32_(&mut b, 4);
    u32_(&mut b, 1);
    s(&mut b, "tokens");
    u32_(&mut b, 9);
    u32_(&mut b, 8);
    u64_(&mut b, 3);
    for t in ["a", "bb", "ccc"] {
        s(&mut b, t);
    }
    s(&mut b, "ints");
    u32_(&mut b, 9);
    u32_(&mut b, 5);
    u64_(&mut b, 2);
    b.extend_from_slice(&(-7i32).to_le_bytes());
    b.extend_from_slice(&9i32.to_le_bytes());
    s(&mut b, "nested");
    u32_(&mut b, 9);
    u32_(&mut b, 9);
    u64_(&mut b, 2);
    for _ in 0..2 {
        u32_(&mut b, 0);
        u64_(&mut b, 2);
        b.extend_from_slice(&[1, 2]);
    }
    s(&mut b, "flag");
    u32_(&mut b, 7);
    b.push(1);
    // blk.0.ffn_up_exps.weight: q8_0 {32, 2, 4} = 272 bytes at 0; a f32 {8} at 288.
    s(&mut b, "blk.0.ffn_up_exps.weight");
    u32_(&mut b, 3);
    for d in [32u64, 2, 4] {
        u64_(&mut b, d);
    }
    u32_(&mut b, 8);
    u64_(&mut b, 0);
    s(&mut b, "output_norm.weight");
    u32_(&mut b, 1);
    u64_(&mut b, 8);
    u32_(&mut b, 0);
    u64_(&mut b, 288);
    b.resize(b.len().div_ceil(32) * 32 + 288 + 32, 0);
    b
}

fn read_gguf(bytes: &[u8]) -> Result<moe_spill::format::gguf::GgufFile, Error> {
    moe_spill::format::gguf::read(Path::new("f.gguf"), bytes, bytes.len() as u64)
}

#[test]
fn gguf_reads_a_valid_file_and_names_the_byte_of_every_cut() {
    use moe_spill::format::gguf::Value;
    let b = gguf_file();
    let f = read_gguf(&b).unwrap();
    assert_eq!(
        f.get("general.architecture"),
        Some(&Value::Str("llama".into()))
    );
    assert_eq!(f.get("ints"), Some(&Value::Ints(vec![-7, 9])));
    assert_eq!(
        f.get("tokens"),
        Some(&Value::Array {
            elem_type: 8,
            len: 3
        })
    );
    assert_eq!(f.get("flag"), Some(&Value::Bool(true)));
    assert_eq!(f.tensors.len(), 2);
    assert_eq!(f.tensors[0].bytes, 272);
    assert_eq!(f.tensors[1].offset, f.data_offset + 288);
    assert_eq!(f.data_offset % 32, 0);
    // Every shorter file is an error at a byte no later than the cut.
    for cut in 0..b.len() {
        let e = read_gguf(&b[..cut])
            .err()
            .unwrap_or_else(|| panic!("cut {cut} read"));
        assert!(e.0.starts_with("f.gguf: byte "), "{}", e.0);
        let at: usize = e.0["f.gguf: byte ".len()..]
            .split(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(at <= cut, "cut {cut}: {}", e.0);
        assert!(!e.0.contains('\n'));
    }
}

/// A GGUF header (valid magic and version) with arbitrary counts, and arbitrary bytes.
fn claimed_gguf() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![any::<u64>(), Just(u64::MAX), 0u64..8],
        prop_oneof![any::<u64>(), Just(u64::MAX), 0u64..8],
        prop::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(n_tensors, n_kv, body)| {
            let mut b = b"GGUF".to_vec();
            b.extend_from_slice(&3u32.to_le_bytes());
            b.extend_from_slice(&n_tensors.to_le_bytes());
            b.extend_from_slice(&n_kv.to_le_bytes());
            b.extend_from_slice(&body);
            b
        })
}

fn gguf_checked(bytes: &[u8]) -> Result<(), TestCaseError> {
    let (r, max) = largest_allocation(|| read_gguf(bytes));
    if let Err(e) = r {
        prop_assert!(!e.0.contains('\n'), "{:?}", e.0);
        prop_assert!(e.0.starts_with("f.gguf: "), "{}", e.0);
    }
    prop_assert!(
        max <= allocation_bound(bytes.len()),
        "the GGUF reader allocated {max} bytes at once"
    );
    Ok(())
}

proptest! {
    #![proptest_config(cases(4000))]

    /// Mutated GGUF headers and headers with arbitrary counts: a file or a one-line
    /// error naming it, never a panic, never an allocation the file cannot back.
    #[test]
    fn gguf_reader_takes_mutations(bytes in mutated(Just(gguf_file()))) {
        gguf_checked(&bytes)?;
    }

    #[test]
    fn gguf_reader_takes_claimed_counts(bytes in claimed_gguf()) {
        gguf_checked(&bytes)?;
    }
}
