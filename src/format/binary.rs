//! moe-spill's compact binary trace (`.mst`), little-endian, 2 bytes per access:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `MSPTRACE` |
//! | 8 | 4 | version (1) |
//! | 12 | 2 | n_layers (MoE layers) |
//! | 14 | 2 | n_experts (routed experts per layer) |
//! | 16 | 2 | top_k |
//! | 18 | 2 | flags: bit 0 = n_experts is the model's (not just max id + 1) |
//! | 20 | 4 | n_responses |
//! | 24 | 8 | n_tokens |
//! | 32 | 8 | checksum of everything after the header |
//! | 40 | 2 n_layers | model layer number of every MoE layer |
//! | | 4 n_responses | tokens of every response (each > 0) |
//! | | ceil(n_tokens / 8) | phase bits: bit t % 8 of byte t / 8 set = prompt token |
//! | | 2 n_tokens n_layers top_k | dense ids `slot * n_experts + expert`, token-major |
//!
//! From a file the ids are not read at all: the file is mapped and the trace's ids are a
//! view into it ([`crate::ids`]), after the same checks as a read (size, checksum, every id
//! in its layer). Only a stream, or ids at an odd offset, are copied into a buffer.

use std::io::{Read, Write};
use std::path::Path;

use super::ExpertLimit;
use crate::error::{Error, Result};
use crate::ids::{Ids, Mapping};
use crate::trace::{Geometry, Trace};

pub const MAGIC: &[u8; 8] = b"MSPTRACE";
pub const VERSION: u32 = 1;
const HEADER: usize = 40;

/// Everything of a binary trace before its ids, checked, and where the ids begin.
struct Meta {
    geometry: Geometry,
    flags: u16,
    response_starts: Vec<usize>,
    prompt: Vec<bool>,
    /// The checksum in the header, and the running one over what was read so far.
    checksum: u64,
    hasher: Checksum,
    /// Byte offset of the ids, their number, and the file's size per the header.
    off: u64,
    n_ids: usize,
    expected: u64,
}

/// Read a binary trace. `size` is the file's length when known (checked before any large
/// allocation, so a corrupt header cannot ask for terabytes).
pub fn read(path: &Path, mut r: impl Read, size: Option<u64>) -> Result<Trace> {
    if size.is_none() {
        // No length to check the header against: take the stream whole first, growing
        // with what arrives rather than allocating what a header claims.
        let mut all = Vec::new();
        r.read_to_end(&mut all).map_err(|e| Error::io(path, e))?;
        return read(path, &all[..], Some(all.len() as u64));
    }
    let m = read_meta(path, &mut r, size)?;
    // Huge pages: in 4 KiB pages the read spends more time in page faults than copying.
    let mut ids: Vec<u16> = moe_spill_huge::zeroed_vec(m.n_ids);
    read_exact(
        path,
        &mut r,
        bytemuck::cast_slice_mut(&mut ids),
        m.off,
        "expert ids",
    )?;
    if cfg!(target_endian = "big") {
        for id in ids.iter_mut() {
            *id = u16::from_le(*id);
        }
    }
    let mut extra = [0u8; 1];
    if size.is_none() && r.read(&mut extra).map_err(|e| Error::io(path, e))? != 0 {
        return Err(Error::at_byte(
            path,
            m.expected,
            "trailing bytes after the expert ids",
        ));
    }
    finish(path, m, ids.into())
}

/// Read a binary trace from its memory-mapped file: the same checks, and the ids stay a
/// view into the mapping (copied out only where they cannot be: an odd offset, a
/// big-endian host).
pub fn read_mapped(path: &Path, mapping: Mapping) -> Result<Trace> {
    let bytes = mapping.bytes();
    let m = read_meta(path, &mut &bytes[..], Some(bytes.len() as u64))?;
    let off = m.off as usize;
    let ids = match mapping.into_ids(off, m.n_ids) {
        Ok(ids) => ids,
        Err(mapping) => {
            let mut v: Vec<u16> = moe_spill_huge::zeroed_vec(m.n_ids);
            for (id, c) in v.iter_mut().zip(mapping.bytes()[off..].chunks_exact(2)) {
                *id = u16::from_le_bytes([c[0], c[1]]);
            }
            v.into()
        }
    };
    finish(path, m, ids)
}

/// Traces with more ids than this check them on two threads.
const PARALLEL_CHECKS: usize = 1 << 20;

/// The checks after the ids are in (the checksum has seen everything before them), and
/// the trace. The checksum and the per-layer check each read every id, so a large trace
/// runs them on two threads; the per-layer check costs more (its repeated-expert passes),
/// so the checksum's thread also takes its first quarter of the tokens. A bad checksum
/// is reported before a bad id, and an earlier bad id before a later one, either way.
fn finish(path: &Path, m: Meta, ids: Ids) -> Result<Trace> {
    let hasher = m.hasher;
    let (g, a) = (&m.geometry, m.geometry.accesses_per_token());
    let parallel = ids.len() > PARALLEL_CHECKS;
    let (head, tail) = ids.split_at(if parallel { ids.len() / a / 4 * a } else { 0 });
    let tail_offset = m.off + 2 * head.len() as u64;
    let checksum = |mut h: Checksum| {
        hash_ids(&mut h, &ids);
        (h.finish(), check_slots(path, g, head, m.off))
    };
    let ((sum, head_slots), tail_slots) = std::thread::scope(|s| {
        // One thread when the trace is small or the system refuses another.
        let (spare, checksum) = (hasher.clone(), &checksum);
        let other = if parallel {
            let spawn = std::thread::Builder::new().spawn_scoped(s, move || checksum(spare));
            spawn.ok()
        } else {
            None
        };
        let tail_slots = check_slots(path, g, tail, tail_offset);
        let sum = match other {
            Some(t) => t.join().expect("the checksum thread panicked"),
            None => checksum(hasher),
        };
        (sum, tail_slots)
    });
    let slots = head_slots.and(tail_slots);
    if sum != m.checksum {
        return Err(Error::in_file(
            path,
            "checksum mismatch: the contents do not match the checksum in the header (byte 32); the file is corrupt",
        ));
    }
    slots?;
    Ok(Trace {
        geometry: m.geometry,
        n_experts_known: m.flags & 1 == 1,
        ids,
        response_starts: m.response_starts,
        prompt: m.prompt,
    })
}

/// Feed ids to the checksum as the file stores them: little-endian.
fn hash_ids(h: &mut Checksum, ids: &[u16]) {
    if cfg!(target_endian = "little") {
        // On a little-endian host a u16's bytes are the file's.
        h.update(bytemuck::cast_slice(ids));
    } else {
        for chunk in ids.chunks(4096) {
            let le: Vec<u8> = chunk.iter().flat_map(|id| id.to_le_bytes()).collect();
            h.update(&le);
        }
    }
}

fn read_meta(path: &Path, r: &mut impl Read, size: Option<u64>) -> Result<Meta> {
    let mut h = [0u8; HEADER];
    read_exact(path, r, &mut h, 0, "header")?;
    if &h[0..8] != MAGIC {
        return Err(Error::at_byte(
            path,
            0,
            "not a moe-spill binary trace (bad magic)",
        ));
    }
    let version = u32::from_le_bytes(h[8..12].try_into().unwrap());
    if version != VERSION {
        return Err(Error::at_byte(
            path,
            8,
            format!("unsupported version {version} (this build reads {VERSION})"),
        ));
    }
    let u16_at = |o: usize| u16::from_le_bytes([h[o], h[o + 1]]);
    let (n_layers, n_experts, top_k, flags) = (u16_at(12), u16_at(14), u16_at(16), u16_at(18));
    let n_responses = u32::from_le_bytes(h[20..24].try_into().unwrap()) as u64;
    let n_tokens = u64::from_le_bytes(h[24..32].try_into().unwrap());
    let checksum = u64::from_le_bytes(h[32..40].try_into().unwrap());
    if n_layers == 0 || n_experts == 0 || top_k == 0 || top_k > n_experts {
        return Err(Error::at_byte(
            path,
            12,
            format!("corrupt header: {n_layers} layers, {n_experts} experts, top-{top_k}"),
        ));
    }
    if n_responses == 0 || n_tokens == 0 {
        return Err(Error::at_byte(path, 20, "empty trace: no tokens"));
    }
    let a = n_layers as u64 * top_k as u64;
    let expected = (|| {
        let ids = n_tokens.checked_mul(a)?.checked_mul(2)?;
        (HEADER as u64)
            .checked_add(2 * n_layers as u64)?
            .checked_add(4 * n_responses)?
            .checked_add(n_tokens.div_ceil(8))?
            .checked_add(ids)
    })()
    .ok_or_else(|| Error::at_byte(path, 20, "corrupt header: sizes overflow"))?;
    if let Some(size) = size {
        if size != expected {
            let what = if size < expected {
                "truncated"
            } else {
                "has trailing bytes"
            };
            return Err(Error::at_byte(
                path,
                size.min(expected),
                format!("{what}: the header describes {expected} bytes, the file has {size}"),
            ));
        }
    }
    let mut hasher = Checksum::new();
    let mut off = HEADER as u64;

    let mut buf = vec![0u8; 2 * n_layers as usize];
    read_exact(path, r, &mut buf, off, "layer numbers")?;
    hasher.update(&buf);
    off += buf.len() as u64;
    let layers: Vec<u16> = buf
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let geometry = Geometry {
        layers,
        n_experts,
        top_k,
    };
    super::check_id_space(path, &geometry)?;
    check_distinct_layers(path, &geometry.layers)?;

    let mut buf = vec![0u8; 4 * n_responses as usize];
    read_exact(path, r, &mut buf, off, "response lengths")?;
    hasher.update(&buf);
    let mut response_starts = Vec::with_capacity(n_responses as usize + 1);
    response_starts.push(0usize);
    let mut total: u64 = 0;
    for (i, c) in buf.chunks_exact(4).enumerate() {
        let n = u32::from_le_bytes(c.try_into().unwrap()) as u64;
        if n == 0 {
            return Err(Error::at_byte(
                path,
                off + 4 * i as u64,
                format!("response {i} has no tokens"),
            ));
        }
        total += n;
        response_starts.push(total as usize);
    }
    if total != n_tokens {
        return Err(Error::at_byte(
            path,
            off,
            format!("response lengths add up to {total} tokens, the header says {n_tokens}"),
        ));
    }
    off += buf.len() as u64;

    let mut bits = vec![0u8; n_tokens.div_ceil(8) as usize];
    read_exact(path, r, &mut bits, off, "phase bits")?;
    hasher.update(&bits);
    off += bits.len() as u64;
    let prompt: Vec<bool> = (0..n_tokens as usize)
        .map(|t| bits[t / 8] >> (t % 8) & 1 == 1)
        .collect();
    Ok(Meta {
        geometry,
        flags,
        response_starts,
        prompt,
        checksum,
        hasher,
        off,
        n_ids: (n_tokens * a) as usize,
        expected,
    })
}

/// Every MoE layer has its own number, as in the text formats (a bit per u16).
fn check_distinct_layers(path: &Path, layers: &[u16]) -> Result<()> {
    let mut seen = vec![0u64; 1 << 10];
    for (slot, &l) in layers.iter().enumerate() {
        let (word, bit) = (l as usize / 64, 1u64 << (l % 64));
        if seen[word] & bit != 0 {
            let first = layers.iter().position(|&o| o == l).expect("seen");
            return Err(Error::at_byte(
                path,
                (HEADER + 2 * slot) as u64,
                format!(
                    "layer {l} appears twice in the layer numbers (MoE layers {first} and {slot})"
                ),
            ));
        }
        seen[word] |= bit;
    }
    Ok(())
}

/// Every id must lie in the slot its position implies, and a token's experts of one
/// layer must be distinct (as the text readers require). The fast pass is branch-free u16
/// arithmetic over the token (it vectorises): a range check against a per-position lower
/// bound, then for each distance d < top_k an equality check of the ids d apart, masked
/// to pairs in the same layer. Only a bad token is searched again for the message.
fn check_slots(path: &Path, g: &Geometry, ids: &[u16], ids_offset: u64) -> Result<()> {
    // The equality passes cost more than the range check: twice as wide vectors halve
    // them where the CPU has them (the build targets baseline x86-64, SSE2).
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        #[target_feature(enable = "avx2")]
        unsafe fn avx2(path: &Path, g: &Geometry, ids: &[u16], ids_offset: u64) -> Result<()> {
            check_slots_in(path, g, ids, ids_offset)
        }
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { avx2(path, g, ids, ids_offset) };
    }
    check_slots_in(path, g, ids, ids_offset)
}

#[inline(always)]
fn check_slots_in(path: &Path, g: &Geometry, ids: &[u16], ids_offset: u64) -> Result<()> {
    let k = g.top_k as usize;
    let n = g.n_experts;
    let a = g.accesses_per_token();
    let lo: Vec<u16> = (0..a).map(|i| (i / k) as u16 * n).collect();
    // same[d - 1][i]: all ones when positions i and i + d are in the same layer.
    let same: Vec<Vec<u16>> = (1..k)
        .map(|d| {
            (0..a - d)
                .map(|i| if i % k + d < k { !0 } else { 0 })
                .collect()
        })
        .collect();
    for (t, token) in ids.chunks_exact(a).enumerate() {
        let mut bad = token
            .iter()
            .zip(&lo)
            .fold(false, |bad, (&id, &l)| bad | (id.wrapping_sub(l) >= n));
        for (d, same) in (1..k).zip(&same) {
            bad |= token[..a - d]
                .iter()
                .zip(&token[d..])
                .zip(same)
                .fold(0u16, |acc, ((&x, &y), &m)| acc | (u16::from(x == y) & m))
                != 0;
        }
        if bad {
            return Err(bad_token(
                path,
                g,
                token,
                ids_offset + 2 * (t * a) as u64,
                &lo,
            ));
        }
    }
    Ok(())
}

/// The message for a token that failed [`check_slots`]: its first id out of its layer, or
/// else its first repeated expert.
#[cold]
fn bad_token(path: &Path, g: &Geometry, token: &[u16], offset: u64, lo: &[u16]) -> Error {
    let (k, n) = (g.top_k as usize, g.n_experts);
    if let Some(i) = (0..token.len()).find(|&i| token[i].wrapping_sub(lo[i]) >= n) {
        let id = token[i];
        return Error::at_byte(
            path,
            offset + 2 * i as u64,
            format!(
                "id {id} is outside layer {} (ids {}..{})",
                g.layers[i / k],
                lo[i],
                lo[i] as u32 + n as u32 - 1
            ),
        );
    }
    let i = (0..token.len())
        .find(|&i| token[i - i % k..i].contains(&token[i]))
        .expect("a bad token has a repeated expert");
    Error::at_byte(
        path,
        offset + 2 * i as u64,
        format!(
            "expert {} of layer {} appears twice in one token",
            token[i] - lo[i],
            g.layers[i / k]
        ),
    )
}

/// A trace read from `path` checked against the chosen model's expert count: a header
/// that gives the model's count (flag bit 0) must give this one, and every expert must be
/// below it (an error at the byte of the first that is not, with its token and layer).
pub(crate) fn check_limit(path: &Path, t: &Trace, limit: ExpertLimit) -> Result<()> {
    let g = &t.geometry;
    let n = g.n_experts;
    let header_says = || {
        Error::at_byte(
            path,
            14,
            format!(
                "the header gives {n} experts per layer; {} has {}",
                limit.model, limit.n_experts
            ),
        )
    };
    if t.n_experts_known && n != limit.n_experts {
        return Err(header_says());
    }
    if n <= limit.n_experts {
        return Ok(());
    }
    // The ids come last: they start where the per-token phase bits end.
    let ids_at = HEADER as u64
        + 2 * g.n_layers() as u64
        + 4 * t.n_responses() as u64
        + (t.n_tokens() as u64).div_ceil(8);
    let (k, a) = (g.top_k as usize, g.accesses_per_token());
    // Every id lies in its layer (checked when read), so id % n is its expert.
    match t.ids.iter().position(|&id| id % n >= limit.n_experts) {
        Some(i) => Err(Error::at_byte(
            path,
            ids_at + 2 * i as u64,
            format!(
                "token {}, layer {}: {}",
                i / a,
                g.layers[i % a / k],
                limit.refusal(t.ids[i] % n)
            ),
        )),
        None => Err(header_says()),
    }
}

fn read_exact(path: &Path, r: &mut impl Read, buf: &mut [u8], off: u64, what: &str) -> Result<()> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::at_byte(path, off, format!("truncated in the {what}"))
        } else {
            Error::io(path, e)
        }
    })
}

/// Write a whole trace.
pub fn write(trace: &Trace, out: &mut impl Write) -> std::io::Result<()> {
    let g = &trace.geometry;
    let layers: Vec<u8> = g.layers.iter().flat_map(|l| l.to_le_bytes()).collect();
    let lens: Vec<u8> = (0..trace.n_responses())
        .flat_map(|r| (trace.response(r).len() as u32).to_le_bytes())
        .collect();
    let mut bits = vec![0u8; trace.n_tokens().div_ceil(8)];
    for (t, &p) in trace.prompt.iter().enumerate() {
        if p {
            bits[t / 8] |= 1 << (t % 8);
        }
    }
    let ids: Vec<u8>;
    let id_bytes: &[u8] = if cfg!(target_endian = "little") {
        // Reading u16s as bytes: on little-endian hosts that is the file's order.
        bytemuck::cast_slice(&trace.ids)
    } else {
        ids = trace.ids.iter().flat_map(|i| i.to_le_bytes()).collect();
        &ids
    };
    let mut hasher = Checksum::new();
    for part in [&layers[..], &lens, &bits, id_bytes] {
        hasher.update(part);
    }
    let mut h = Vec::with_capacity(HEADER);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&VERSION.to_le_bytes());
    for v in [
        g.n_layers() as u16,
        g.n_experts,
        g.top_k,
        trace.n_experts_known as u16,
    ] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    h.extend_from_slice(&(trace.n_responses() as u32).to_le_bytes());
    h.extend_from_slice(&(trace.n_tokens() as u64).to_le_bytes());
    h.extend_from_slice(&hasher.finish().to_le_bytes());
    for part in [&h[..], &layers, &lens, &bits, id_bytes] {
        out.write_all(part)?;
    }
    Ok(())
}

/// A fast 64-bit checksum over a byte stream (four independent multiply-rotate lanes over
/// 8-byte words, so it runs at memory speed). Not cryptographic: it catches corruption.
#[derive(Clone)]
struct Checksum {
    lanes: [u64; 4],
    pending: [u8; 32],
    n_pending: usize,
    len: u64,
}

const K1: u64 = 0x9E37_79B9_7F4A_7C15;
const K2: u64 = 0xC2B2_AE3D_27D4_EB4F;

impl Checksum {
    fn new() -> Self {
        Checksum {
            lanes: [1, 2, 3, 4],
            pending: [0; 32],
            n_pending: 0,
            len: 0,
        }
    }

    #[inline]
    fn block(&mut self, b: &[u8]) {
        for (i, lane) in self.lanes.iter_mut().enumerate() {
            let w = u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap());
            *lane = (*lane ^ w).wrapping_mul(K1).rotate_left(29);
        }
    }

    fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.n_pending > 0 {
            let take = (32 - self.n_pending).min(data.len());
            self.pending[self.n_pending..self.n_pending + take].copy_from_slice(&data[..take]);
            self.n_pending += take;
            data = &data[take..];
            if self.n_pending < 32 {
                return;
            }
            let p = self.pending;
            self.block(&p);
            self.n_pending = 0;
        }
        let mut blocks = data.chunks_exact(32);
        for b in &mut blocks {
            self.block(b);
        }
        let rest = blocks.remainder();
        self.pending[..rest.len()].copy_from_slice(rest);
        self.n_pending = rest.len();
    }

    fn finish(mut self) -> u64 {
        if self.n_pending > 0 {
            let mut p = [0u8; 32];
            p[..self.n_pending].copy_from_slice(&self.pending[..self.n_pending]);
            self.block(&p);
        }
        let mut h = self.len.wrapping_mul(K2);
        for lane in self.lanes {
            h = (h ^ lane).wrapping_mul(K2).rotate_left(31);
        }
        h ^ (h >> 32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Trace {
        let geometry = Geometry {
            layers: vec![1, 2],
            n_experts: 4,
            top_k: 2,
        };
        Trace {
            geometry,
            n_experts_known: true,
            ids: vec![3, 0, 5, 6, 2, 1, 4, 7, 0, 1, 4, 5].into(),
            response_starts: vec![0, 2, 3],
            prompt: vec![true, false, false],
        }
    }

    #[test]
    fn round_trip() {
        let t = sample();
        let mut out = Vec::new();
        write(&t, &mut out).unwrap();
        let back = read(Path::new("t.mst"), &out[..], Some(out.len() as u64)).unwrap();
        assert_eq!(back, t);
        let back = read(Path::new("t.mst"), &out[..], None).unwrap();
        assert_eq!(back, t);
        // The layout is little-endian whatever the host: fixed bytes, not a round trip.
        assert_eq!(&out[..14], b"MSPTRACE\x01\0\0\0\x02\0");
        let ids_at = out.len() - 2 * t.ids.len();
        assert_eq!(&out[ids_at..ids_at + 8], &[3, 0, 0, 0, 5, 0, 6, 0]);
    }

    #[test]
    fn corruption_is_caught() {
        let t = sample();
        let mut out = Vec::new();
        write(&t, &mut out).unwrap();
        let n = out.len();
        let e = read(Path::new("t.mst"), &out[..n - 3], Some(n as u64 - 3)).unwrap_err();
        assert!(e.0.contains("truncated"), "{e}");
        let e = read(Path::new("t.mst"), &out[..n - 3], None).unwrap_err();
        assert!(e.0.contains("truncated: the header describes"), "{e}");
        let mut bad = out.clone();
        bad[n - 1] ^= 1;
        let e = read(Path::new("t.mst"), &bad[..], None).unwrap_err();
        assert!(e.0.contains("checksum mismatch"), "{e}");
    }

    /// `sample` with 9 tokens: its ids start at an even offset (54; the sample's is 53).
    fn sample_even() -> Trace {
        let mut t = sample();
        for tok in 0..6u16 {
            t.ids
                .extend_from_slice(&[tok % 4, (tok + 1) % 4, 4 + tok % 4, 4 + (tok + 2) % 4]);
            t.prompt.push(false);
        }
        t.response_starts = vec![0, 2, 9];
        t
    }

    /// Through a file, read_file maps it: the same trace and the same errors as reading
    /// it as a stream, with the ids left in the mapping where their offset allows.
    #[test]
    fn mapped_reads_equal_streamed_reads() {
        use std::io::Write;
        // An id outside its layer, in a file with a good checksum: caught by the layer
        // check on the mapped view itself.
        let mut bad_id = sample_even();
        bad_id.ids[30] = 1;
        for (t, even) in [(sample(), false), (sample_even(), true), (bad_id, true)] {
            let mut out = Vec::new();
            write(&t, &mut out).unwrap();
            let n = out.len();
            let mut cases: Vec<Vec<u8>> = vec![out.clone(), out[..n - 3].to_vec()];
            cases.push([&out[..], &[0, 0]].concat());
            for at in [0, 8, 12, 20, 41, 45, 52, n - 1] {
                let mut bad = out.clone();
                bad[at] ^= 0x21;
                cases.push(bad);
            }
            for bytes in cases {
                let mut f = tempfile::NamedTempFile::new().unwrap();
                f.write_all(&bytes).unwrap();
                f.flush().unwrap();
                let streamed = read(f.path(), &bytes[..], Some(bytes.len() as u64));
                let file = std::fs::File::open(f.path()).unwrap();
                let Some(m) = Mapping::of_file(&file, bytes.len() as u64) else {
                    return; // no mmap here: read_file reads the stream
                };
                let mapped = read_mapped(f.path(), m);
                match (streamed, mapped) {
                    (Ok(a), Ok(b)) => {
                        assert_eq!(a, b);
                        assert_eq!(b, t);
                        assert_eq!(b.ids.is_mapped(), even);
                        let via_file =
                            crate::format::read_file(f.path(), None, None, None).unwrap();
                        assert_eq!(via_file.ids.is_mapped(), even);
                        assert_eq!(via_file, t);
                    }
                    (Err(a), Err(b)) => {
                        assert_eq!(a.0, b.0);
                        if bytes == out && even {
                            assert!(b.0.contains("is outside layer"), "{b}");
                        }
                    }
                    (a, b) => panic!("streamed {a:?} but mapped {b:?}"),
                }
            }
        }
    }

    /// Past PARALLEL_CHECKS ids the checksum and the layer check run on two threads:
    /// the same trace, the checksum error before a bad id's, and a bad id's position.
    #[test]
    fn large_traces_are_checked_on_two_threads() {
        // 263,152 tokens: the ids start at an even offset, so the file is mapped.
        let n_tokens = PARALLEL_CHECKS / 4 + 1008;
        let mut t = sample();
        t.ids = (0..n_tokens * 4)
            .map(|i| ((i % 4) / 2 * 4 + i % 3) as u16)
            .collect::<Vec<u16>>()
            .into();
        t.prompt = vec![false; n_tokens];
        t.response_starts = vec![0, n_tokens / 3, n_tokens];
        assert!(t.ids.len() > PARALLEL_CHECKS);
        let mut out = Vec::new();
        write(&t, &mut out).unwrap();
        let n = out.len();
        let ids_at = n - 2 * t.ids.len();
        assert_eq!(read(Path::new("t.mst"), &out[..], None).unwrap(), t);
        // Through a file too (mapped where the offset allows): the same trace or error.
        let via_file = |bytes: &[u8]| {
            use std::io::Write;
            let mut f = tempfile::NamedTempFile::new().unwrap();
            f.write_all(bytes).unwrap();
            f.flush().unwrap();
            let streamed = read(f.path(), bytes, Some(bytes.len() as u64));
            let filed = crate::format::read_file(f.path(), None, None, None);
            match (streamed, filed) {
                (Ok(a), Ok(b)) => {
                    assert_eq!(a, b);
                    assert!(b.ids.is_mapped() || Mapping::of_file(f.as_file(), 1).is_none());
                }
                (Err(a), Err(b)) => assert_eq!(a.0, b.0),
                (a, b) => panic!("streamed {a:?} but from the file {b:?}"),
            }
        };
        via_file(&out);
        // An id of the second layer in the first, with the checksum written for it.
        let mut bad = t.clone();
        bad.ids[4 * 177_777] = 5;
        let mut bad_out = Vec::new();
        write(&bad, &mut bad_out).unwrap();
        let e = read(Path::new("t.mst"), &bad_out[..], None).unwrap_err();
        via_file(&bad_out);
        let at = format!("byte {}", ids_at + 8 * 177_777);
        assert!(
            e.0.contains("id 5 is outside layer 1") && e.0.contains(&at),
            "{e}"
        );
        // Another bad token in the first quarter (checked on the checksum's thread): the
        // earlier one is reported.
        bad.ids[4 * 1000 + 2] = 1;
        let mut early = Vec::new();
        write(&bad, &mut early).unwrap();
        let e = read(Path::new("t.mst"), &early[..], None).unwrap_err();
        via_file(&early);
        let at = format!("byte {}", ids_at + 8 * 1000 + 4);
        assert!(
            e.0.contains("id 1 is outside layer 2") && e.0.contains(&at),
            "{e}"
        );
        // And a flipped byte besides: the checksum speaks first.
        bad_out[n - 2] ^= 4;
        let e = read(Path::new("t.mst"), &bad_out[..], None).unwrap_err();
        via_file(&bad_out);
        assert!(e.0.contains("checksum mismatch"), "{e}");
    }

    #[test]
    fn checksum_is_split_independent() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut a = Checksum::new();
        a.update(&data);
        let mut b = Checksum::new();
        for part in data.chunks(13) {
            b.update(part);
        }
        assert_eq!(a.finish(), b.finish());
    }
}
