//! Branch-free kernels of the sampler's hot loop: counts of running sums <= u, and the
//! picks of a token held in one SSE register for the repeat check.

/// How many of the `L` ascending floats at `xs` are <= u, for `L` up to 32: the
/// comparisons packed into a bit mask, whose ones are a prefix (the running sums never
/// decrease), counted as its trailing ones. Reads whole groups of 4.
///
/// # Safety
/// `xs` is readable for `L` rounded up to a multiple of 4 floats, those past `L` > u.
#[inline(always)]
pub(super) unsafe fn count_le_sorted<const L: usize>(xs: *const f32, u: f32) -> usize {
    const { assert!(L <= 32) };
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is part of x86_64; the loads are whole groups of 4 (see above).
        let mask = unsafe {
            let uu = _mm_set1_ps(u);
            let le = |i: usize| {
                if 4 * i < L {
                    _mm_castps_si128(_mm_cmple_ps(_mm_loadu_ps(xs.add(4 * i)), uu))
                } else {
                    _mm_setzero_si128()
                }
            };
            // 16 comparisons (-1 or 0 per lane) to 16 bytes to a 16-bit mask.
            let m16 = |g: usize| {
                let lo = _mm_packs_epi32(le(4 * g), le(4 * g + 1));
                let hi = _mm_packs_epi32(le(4 * g + 2), le(4 * g + 3));
                _mm_movemask_epi8(_mm_packs_epi16(lo, hi)) as u32
            };
            if L > 16 {
                m16(0) | m16(1) << 16
            } else {
                m16(0)
            }
        };
        debug_assert_eq!(mask & mask.wrapping_add(1), 0, "not ascending");
        (!mask).trailing_zeros() as usize
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        // SAFETY: see above.
        count_le(unsafe { std::slice::from_raw_parts(xs, L) }, u)
    }
}

/// How many of the `xs` are <= u: branch-free, four at a time.
#[inline(always)]
pub(super) fn count_le(xs: &[f32], u: f32) -> usize {
    let mut it = xs.chunks_exact(4);
    #[cfg(target_arch = "x86_64")]
    let n = {
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is part of x86_64; every load is a whole group of 4 of `xs`.
        unsafe {
            let uu = _mm_set1_ps(u);
            // Each lane counts down by one for every x <= u (the compare gives -1).
            let mut acc = _mm_setzero_si128();
            for c in &mut it {
                let le = _mm_cmple_ps(_mm_loadu_ps(c.as_ptr()), uu);
                acc = _mm_sub_epi32(acc, _mm_castps_si128(le));
            }
            acc = _mm_add_epi32(acc, _mm_shuffle_epi32::<0b01_00_11_10>(acc));
            acc = _mm_add_epi32(acc, _mm_shuffle_epi32::<0b10_11_00_01>(acc));
            _mm_cvtsi128_si32(acc) as usize
        }
    };
    #[cfg(not(target_arch = "x86_64"))]
    let n = (&mut it)
        .flatten()
        .map(|&x| (x <= u) as usize)
        .sum::<usize>();
    n + it
        .remainder()
        .iter()
        .map(|&x| (x <= u) as usize)
        .sum::<usize>()
}

/// The experts picked so far for one token and layer, up to 8, in one SSE register for a
/// branch-free repeat check. Lanes not yet used hold 0xFFFF, which is no expert
/// (n_experts <= 65535); lane `j` may hold the last rejected candidate, a repeat of an
/// earlier lane.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(super) struct Picked(std::arch::x86_64::__m128i);

/// `LANES[j]`: 0xFFFF in lane j, 0 elsewhere.
#[cfg(target_arch = "x86_64")]
static LANES: [[u16; 8]; 8] = {
    let mut m = [[0u16; 8]; 8];
    let mut j = 0;
    while j < 8 {
        m[j][j] = u16::MAX;
        j += 1;
    }
    m
};

#[cfg(target_arch = "x86_64")]
impl Picked {
    #[inline(always)]
    pub(super) fn new() -> Picked {
        // SAFETY (here and below): SSE2 is part of x86_64; `LANES[j]` is 16 bytes.
        Picked(unsafe { std::arch::x86_64::_mm_set1_epi16(-1) })
    }

    /// Whether `e` is among the picks, and `e` put in lane `j`.
    #[inline(always)]
    pub(super) fn check_and_put(&mut self, e: u16, j: usize) -> bool {
        use std::arch::x86_64::*;
        unsafe {
            let ee = _mm_set1_epi16(e as i16);
            let dup = _mm_movemask_epi8(_mm_cmpeq_epi16(self.0, ee)) != 0;
            let lane = _mm_loadu_si128(LANES[j & 7].as_ptr() as *const __m128i);
            self.0 = _mm_or_si128(_mm_andnot_si128(lane, self.0), _mm_and_si128(lane, ee));
            dup
        }
    }
}
