//! Statistics of a run: the one nearest-rank percentile of per-token misses (of a sorted
//! slice, or of a histogram of counts, which needs no sort), and the prompt and decode
//! totals of a batched replay.

use serde::Serialize;

/// Totals of one phase of a run over its counted steps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PhaseTotals {
    /// Steps: prompt ubatches, or decode steps.
    pub steps: u64,
    /// Tokens the steps carried.
    pub tokens: u64,
    /// Accesses: each step's union of experts per slot, summed.
    pub accesses: u64,
    pub misses: u64,
    /// The misses' bytes, each at its layer's expert size, when the run counted them
    /// (`Misses::bytes_per_step`).
    pub bytes: Option<u64>,
}

/// A run's totals split by phase: what the time model costs step by step, summed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BatchStats {
    /// Prompt ubatches (prompt tokens one by one when not batched).
    pub prompt: PhaseTotals,
    /// Decode steps (one token each without --parallel).
    pub decode: PhaseTotals,
}

/// The nearest rank (1..=n) of percentile `p` (0..=100) among `n > 0` sorted values.
pub fn nearest_rank(n: usize, p: f64) -> usize {
    (((p / 100.0) * n as f64).ceil().max(1.0) as usize).min(n)
}

/// Nearest-rank percentile (p in 0..=100) of sorted values; 0 (the default) when there
/// are none.
pub fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    sorted[nearest_rank(sorted.len(), p) - 1]
}

/// Per-token miss counts as a histogram (a count never exceeds the accesses of a
/// token), so percentiles cost one pass instead of a sort of every row's tokens.
pub struct MissHistogram {
    counts: Vec<u64>,
    n: u64,
}

impl MissHistogram {
    pub fn new(values: &[u32]) -> Self {
        let top = values.iter().copied().max().unwrap_or(0) as usize;
        let mut counts = vec![0u64; top + 1];
        values.iter().for_each(|&v| counts[v as usize] += 1);
        MissHistogram {
            counts,
            n: values.len() as u64,
        }
    }

    /// Nearest-rank percentile (p in 0..=100), as `percentile` of the sorted values.
    pub fn percentile(&self, p: f64) -> u32 {
        if self.n == 0 {
            return 0;
        }
        let rank = nearest_rank(self.n as usize, p) as u64;
        let mut seen = 0;
        for (v, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return v as u32;
            }
        }
        unreachable!("rank <= n")
    }

    pub fn max(&self) -> u32 {
        (self.counts.len() - 1) as u32
    }

    /// (misses in a token, tokens with that many), for the values that occur.
    pub fn pairs(&self) -> Vec<(u32, u64)> {
        (0..self.counts.len())
            .filter(|&v| self.counts[v] > 0)
            .map(|v| (v as u32, self.counts[v]))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile::<u32>(&[], 50.0), 0);
        assert_eq!(MissHistogram::new(&[]).percentile(50.0), 0);
        // The histogram agrees with the sort on skewed random counts.
        let mut x = 7u64;
        for len in [1usize, 2, 3, 10, 99, 100, 101, 1000, 4097] {
            let v: Vec<u32> = (0..len)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((x >> 33) % 600) as u32 * ((x >> 20) % 2) as u32
                })
                .collect();
            let mut sorted = v.clone();
            sorted.sort_unstable();
            let h = MissHistogram::new(&v);
            for p in [0.0, 1.0, 50.0, 90.0, 99.0, 99.9, 100.0] {
                assert_eq!(h.percentile(p), percentile(&sorted, p), "len {len} p {p}");
            }
            assert_eq!(h.max(), *sorted.last().unwrap());
        }
    }
}
