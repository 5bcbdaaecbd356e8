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
//! The ids are read straight into the trace's buffer, so loading runs at memory speed.

use std::io::{Read, Write};
use std::path::Path;

use crate::error::{Error, Result};
use crate::trace::{Geometry, Trace};

pub const MAGIC: &[u8; 8] = b"MSPTRACE";
pub const VERSION: u32 = 1;
const HEADER: usize = 40;

/// Read a binary trace. `size` is the file's length when known (checked before any large
/// allocation, so a corrupt header cannot ask for terabytes).
pub fn read(path: &Path, mut r: impl Read, size: Option<u64>) -> Result<Trace> {
    let mut h = [0u8; HEADER];
    read_exact(path, &mut r, &mut h, 0, "header")?;
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
    read_exact(path, &mut r, &mut buf, off, "layer numbers")?;
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

    let mut buf = vec![0u8; 4 * n_responses as usize];
    read_exact(path, &mut r, &mut buf, off, "response lengths")?;
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
    read_exact(path, &mut r, &mut bits, off, "phase bits")?;
    hasher.update(&bits);
    off += bits.len() as u64;
    let prompt: Vec<bool> = (0..n_tokens as usize)
        .map(|t| bits[t / 8] >> (t % 8) & 1 == 1)
        .collect();

    // Huge pages: in 4 KiB pages the read spends more time in page faults than copying.
    let mut ids: Vec<u16> = moe_spill_policies::huge::zeroed_vec((n_tokens * a) as usize);
    {
        // SAFETY: u16 has no invalid bit patterns and no padding; the byte view covers
        // exactly the vector's initialised elements.
        let bytes =
            unsafe { std::slice::from_raw_parts_mut(ids.as_mut_ptr() as *mut u8, ids.len() * 2) };
        read_exact(path, &mut r, bytes, off, "expert ids")?;
        hasher.update(bytes);
    }
    if cfg!(target_endian = "big") {
        for id in ids.iter_mut() {
            *id = u16::from_le(*id);
        }
    }
    let mut extra = [0u8; 1];
    if size.is_none() && r.read(&mut extra).map_err(|e| Error::io(path, e))? != 0 {
        return Err(Error::at_byte(
            path,
            expected,
            "trailing bytes after the expert ids",
        ));
    }
    if hasher.finish() != checksum {
        return Err(Error::at_byte(
            path,
            32,
            "checksum mismatch: the file is corrupt",
        ));
    }
    check_slots(path, &geometry, &ids, off)?;
    Ok(Trace {
        geometry,
        n_experts_known: flags & 1 == 1,
        ids,
        response_starts,
        prompt,
    })
}

/// Every id must lie in the slot its position implies. The fast pass is branch-free
/// u16 arithmetic against a per-position lower bound (it vectorises); only a bad token
/// is searched again for the message.
fn check_slots(path: &Path, g: &Geometry, ids: &[u16], ids_offset: u64) -> Result<()> {
    let k = g.top_k as usize;
    let n = g.n_experts;
    let a = g.accesses_per_token();
    let lo: Vec<u16> = (0..a).map(|i| (i / k) as u16 * n).collect();
    for (t, token) in ids.chunks_exact(a).enumerate() {
        let bad = token
            .iter()
            .zip(&lo)
            .fold(false, |bad, (&id, &l)| bad | (id.wrapping_sub(l) >= n));
        if bad {
            let i = (0..a).find(|&i| token[i].wrapping_sub(lo[i]) >= n).unwrap();
            let id = token[i];
            return Err(Error::at_byte(
                path,
                ids_offset + 2 * (t * a + i) as u64,
                format!(
                    "id {id} is outside layer {} (ids {}..{})",
                    g.layers[i / k],
                    lo[i],
                    lo[i] as u32 + n as u32 - 1
                ),
            ));
        }
    }
    Ok(())
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
        // SAFETY: reading u16s as bytes; on little-endian hosts that is the file's order.
        unsafe { std::slice::from_raw_parts(trace.ids.as_ptr() as *const u8, trace.ids.len() * 2) }
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
            ids: vec![3, 0, 5, 6, 2, 1, 4, 7, 0, 1, 4, 5],
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
        assert!(e.0.contains("truncated in the expert ids"), "{e}");
        let mut bad = out.clone();
        bad[n - 1] ^= 1;
        let e = read(Path::new("t.mst"), &bad[..], None).unwrap_err();
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
