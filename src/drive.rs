//! How fast a drive reads: throughput over request size and queue depth.
//!
//! A drive's rated sequential figure is reached only with large requests at a high queue
//! depth; decode engines read at queue depth 1 to 4 in requests of a readahead window or
//! an expert slice, where the same drive delivers a fraction of it (a PCIe 4 drive: 64 KiB
//! random reads 0.49 GB/s at QD1 against 3.90 at QD128, docs/VALIDATION.md lists the
//! sources). Two ways to describe a drive:
//!
//! - **Measured points** (fio): GB/s at (request size, queue depth). Between points the
//!   curve is interpolated linearly in log(size) and log(depth); below the smallest size
//!   a request costs what the smallest one costs (latency dominates); above the largest
//!   size, and above the deepest queue, throughput stays at the last point.
//! - **Three figures**, when no points are given: the rated sequential read
//!   `bandwidth_gbs` (B, the datasheet), the fixed cost of one request `latency_us` (L)
//!   and the rate at which one request streams `stream_gbs` (S). One request of `s`
//!   bytes alone takes `L + s / S`; with `q` in flight their latencies overlap, while
//!   every byte still passes the drive's rated bandwidth in turn:
//!   `1 / throughput(s, q) = (L + s / S) / (q * s) + 1 / B`. The controller also
//!   completes at most `R` requests per second (the datasheet's random-read IOPS, at a
//!   deep queue): small requests at a deep queue are bound by `R * s` where that is
//!   below `B`, so the last term is `max(1 / B, 1 / (R * s))`.
//!   Fitted to the one published size x depth curve (a PCIe 4 DRAM-less drive, O_DIRECT
//!   random reads: 64 and 256 KiB at QD 1 to 128) this gives L = 96 us and S = 2.37 GB/s
//!   with B = 6.4 GB/s, and meets every 256 KiB point within 20 % (docs/VALIDATION.md).
//!
//! The curve also carries the largest request the kernel sends the drive
//! (`max_sectors_kb`, [`DriveCurve::max_request`]): the engines cut their reads at it
//! (`io_engine.rs`).

use serde::{Deserialize, Serialize};

pub const GB: f64 = 1e9;

/// The queue's `max_sectors_kb` when a profile does not say: the block layer's default
/// cap, `BLK_DEF_MAX_SECTORS_CAP` = 2560 sectors (1280 KiB), from Linux 4.4's
/// d2be537c3ba3 ("block: bump BLK_DEF_MAX_SECTORS to 2560") to 6.16; Linux 6.17 raised
/// it to 4 MiB (9b8b84879d4a, block/blk.h). The drive's maximum transfer (NVMe MDTS,
/// `max_hw_sectors_kb`) lowers it: 512 KiB on a Samsung 980 PRO (mdts 7,
/// raspberrypi/rpi-eeprom#619), 2 MiB on a PM981a (docs/VALIDATION.md).
pub const DEFAULT_MAX_SECTORS_KB: u64 = 1280;

const KIB: f64 = 1024.0;

/// One measured point: `gbs` (decimal GB/s) reading `block_kib` KiB requests with
/// `queue_depth` of them in flight.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrivePoint {
    pub block_kib: f64,
    pub queue_depth: f64,
    pub gbs: f64,
}

/// A drive's read curve (see the module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct DriveCurve {
    /// Rated sequential read, bytes/s (B).
    pub rated: f64,
    /// Latency of a small read at QD1, seconds (L).
    pub latency: f64,
    /// Streaming rate of one request in flight, bytes/s (S).
    pub stream: f64,
    /// Requests the controller completes per second at most (R, the rated random-read
    /// IOPS); infinite unless set ([`DriveCurve::with_iops`]).
    pub iops: f64,
    /// The largest request the block layer sends the drive, bytes (the queue's
    /// `max_sectors_kb`); larger reads go out as several requests at once. Infinite
    /// unless set ([`DriveCurve::with_max_request`]).
    pub max_request: f64,
    /// Measured points, sorted by queue depth then size; empty: use B, L and S.
    points: Vec<DrivePoint>,
}

impl DriveCurve {
    /// The curve of three datasheet figures (GB/s, microseconds, GB/s).
    pub fn from_figures(rated_gbs: f64, latency_us: f64, stream_gbs: f64) -> DriveCurve {
        DriveCurve {
            rated: rated_gbs * GB,
            latency: latency_us * 1e-6,
            stream: stream_gbs * GB,
            iops: f64::INFINITY,
            max_request: f64::INFINITY,
            points: Vec::new(),
        }
    }

    /// The curve with at most `iops` requests per second (R).
    pub fn with_iops(mut self, iops: f64) -> DriveCurve {
        self.iops = iops;
        self
    }

    /// The curve with requests no larger than `bytes` (`max_sectors_kb` x 1024).
    pub fn with_max_request(mut self, bytes: f64) -> DriveCurve {
        self.max_request = bytes;
        self
    }

    /// A curve through measured points; `rated_gbs`, `latency_us` and `stream_gbs` stay for
    /// description only. Checked: every figure finite and positive, depth at least 1.
    pub fn with_points(mut self, mut points: Vec<DrivePoint>) -> Result<DriveCurve, String> {
        for p in &points {
            check_positive(p.block_kib, "drive point block_kib")?;
            check_positive(p.gbs, "drive point gbs")?;
            if !(p.queue_depth.is_finite() && p.queue_depth >= 1.0) {
                return Err(format!(
                    "drive point queue_depth must be at least 1, got {}",
                    p.queue_depth
                ));
            }
        }
        points.sort_by(|a, b| {
            (a.queue_depth, a.block_kib)
                .partial_cmp(&(b.queue_depth, b.block_kib))
                .expect("finite")
        });
        // Beyond the deepest point the curve stays flat, so points at one depth would
        // price a deep queue like a shallow one.
        if let Some(first) = points.first() {
            if points.iter().all(|p| p.queue_depth == first.queue_depth) {
                return Err(format!(
                    "drive points are all at queue depth {}: give two depths or more (QD 1 and a deep queue, as scripts/measure_disk.sh measures), or latency_us and stream_gbs instead",
                    first.queue_depth
                ));
            }
        }
        for w in points.windows(2) {
            if w[0].queue_depth == w[1].queue_depth && w[0].block_kib == w[1].block_kib {
                return Err(format!(
                    "drive points: two points at {} KiB, queue depth {}",
                    w[0].block_kib, w[0].queue_depth
                ));
            }
        }
        // More requests in flight never read slower: a deeper queue measured well below a
        // shallower one at the same size is a mistyped point (fio's run-to-run noise is a
        // few percent, hence the 10 % margin).
        for (i, p) in points.iter().enumerate() {
            if let Some(q) = points[i + 1..]
                .iter()
                .find(|q| q.block_kib == p.block_kib && q.gbs < 0.9 * p.gbs)
            {
                return Err(format!(
                    "drive points: {} KiB at queue depth {} reads {} GB/s, less than the {} GB/s at depth {}: a deeper queue is not slower; check the points",
                    q.block_kib, q.queue_depth, q.gbs, p.gbs, p.queue_depth
                ));
            }
        }
        self.points = points;
        Ok(self)
    }

    pub fn points(&self) -> &[DrivePoint] {
        &self.points
    }

    /// Bytes/s reading requests of `block` bytes with `qd` of them in flight.
    pub fn throughput(&self, block: f64, qd: f64) -> f64 {
        let qd = qd.max(1.0);
        if self.points.is_empty() {
            let one = self.latency + block / self.stream;
            let transfer = (1.0 / self.rated).max(1.0 / (self.iops * block));
            return 1.0 / (one / (qd * block) + transfer);
        }
        self.interpolated(block, qd)
    }

    /// Seconds to read `bytes` in requests of `block` bytes, `qd` in flight. `bytes` may
    /// be a mean over tokens smaller than one request (a rare miss): the requests keep
    /// their size and the time its share of theirs.
    pub fn read_seconds(&self, bytes: f64, block: f64, qd: f64) -> f64 {
        if bytes <= 0.0 {
            return 0.0;
        }
        bytes / self.throughput(block.max(1.0), qd)
    }

    fn interpolated(&self, block: f64, qd: f64) -> f64 {
        // Throughput at each measured depth, then between the two depths around `qd`.
        let mut depths: Vec<(f64, f64)> = Vec::new();
        let mut i = 0;
        while i < self.points.len() {
            let d = self.points[i].queue_depth;
            let j = i + self.points[i..].partition_point(|p| p.queue_depth == d);
            depths.push((d, along_size(&self.points[i..j], block)));
            i = j;
        }
        log_interp(&depths, qd)
    }
}

/// Throughput at size `block` from the points of one depth (sorted by size). Below the
/// smallest size a request takes as long as the smallest: throughput scales with size.
fn along_size(points: &[DrivePoint], block: f64) -> f64 {
    let first = &points[0];
    let first_bytes = first.block_kib * KIB;
    if block < first_bytes {
        return first.gbs * GB * block / first_bytes;
    }
    let curve: Vec<(f64, f64)> = points
        .iter()
        .map(|p| (p.block_kib * KIB, p.gbs * GB))
        .collect();
    log_interp(&curve, block)
}

/// Linear in (ln x, ln y) between the points around `x` (sorted by x); flat beyond the
/// ends.
fn log_interp(curve: &[(f64, f64)], x: f64) -> f64 {
    let k = curve.partition_point(|&(px, _)| px <= x);
    if k == 0 {
        return curve[0].1;
    }
    if k == curve.len() {
        return curve[k - 1].1;
    }
    let (x0, y0) = curve[k - 1];
    let (x1, y1) = curve[k];
    let f = (x.ln() - x0.ln()) / (x1.ln() - x0.ln());
    (y0.ln() + f * (y1.ln() - y0.ln())).exp()
}

pub(crate) fn check_positive(v: f64, what: &str) -> Result<(), String> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(format!(
            "{what} must be a positive number, got {}",
            crate::units::shown(v)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
    }

    #[test]
    fn figures_give_overlapped_latency_plus_rated_transfer() {
        let d = DriveCurve::from_figures(7.0, 50.0, 4.0);
        // One 1 MiB request: 50 us + 1 MiB / 4 GB/s, plus 1 MiB / 7 GB/s.
        let s = 1048576.0;
        let one = 50e-6 + s / 4e9;
        assert!(close(d.throughput(s, 1.0), s / (one + s / 7e9)));
        // Two in flight share the latency, not the rated transfer.
        assert!(close(d.throughput(s, 2.0), s / (one / 2.0 + s / 7e9)));
        // Deep queues approach the rating and never pass it.
        let deep = d.throughput(s, 1e6);
        assert!(deep < 7e9 && deep > 0.999 * 7e9);
        assert!(close(
            d.read_seconds(2.0 * s, s, 1.0),
            2.0 * (one + s / 7e9)
        ));
        assert_eq!(d.read_seconds(0.0, s, 1.0), 0.0);
    }

    #[test]
    fn the_iops_ceiling_binds_small_requests_at_a_deep_queue_only() {
        let d = DriveCurve::from_figures(7.0, 50.0, 4.0);
        let r = d.clone().with_iops(740e3);
        // 4 KiB at a deep queue: 740K requests/s of 4 KiB, 3.03 GB/s, not the rating.
        let deep = r.throughput(4096.0, 1e6);
        assert!(deep < 740e3 * 4096.0 && deep > 0.999 * 740e3 * 4096.0);
        // A 4 KiB request reads slower than a 1 MiB one at any depth.
        for qd in [16.0, 256.0, 1e6] {
            assert!(r.throughput(4096.0, qd) < r.throughput(1048576.0, qd));
        }
        // Where R * s is above the rating (9.5 KiB and up here) nothing changes.
        for s in [16384.0, 262144.0, 1048576.0] {
            for qd in [1.0, 8.0, 1e6] {
                assert_eq!(r.throughput(s, qd), d.throughput(s, qd));
            }
        }
    }

    #[test]
    fn the_fitted_figures_meet_the_published_256k_curve() {
        // 0xBakeer/deepseek-v41-flash-spark#2: 256 KiB O_DIRECT random reads on a PCIe 4
        // DRAM-less drive, GB/s at QD 1, 4, 16, 64, 128.
        let d = DriveCurve::from_figures(6.4, 96.0, 2.37);
        for (qd, gbs) in [
            (1.0, 1.06),
            (4.0, 2.35),
            (16.0, 5.22),
            (64.0, 5.84),
            (128.0, 5.88),
        ] {
            let t = d.throughput(262144.0, qd) / 1e9;
            assert!(
                (t / gbs - 1.0).abs() < 0.21,
                "QD {qd}: {t:.2} against {gbs}"
            );
        }
        // And 64 KiB at QD1 (latency-bound): 0.49 GB/s.
        assert!((d.throughput(65536.0, 1.0) / 0.49e9 - 1.0).abs() < 0.05);
    }

    fn fio_like() -> DriveCurve {
        // The PCIe 4 drive of the module docs: 64 KiB and 256 KiB at QD1 and QD128.
        let p = |k, q, g| DrivePoint {
            block_kib: k,
            queue_depth: q,
            gbs: g,
        };
        DriveCurve::from_figures(7.0, 80.0, 2.0)
            .with_points(vec![
                p(256.0, 128.0, 5.88),
                p(64.0, 1.0, 0.49),
                p(256.0, 1.0, 1.06),
                p(64.0, 128.0, 3.90),
            ])
            .unwrap()
    }

    #[test]
    fn points_are_met_exactly_and_interpolated_in_log_log() {
        let d = fio_like();
        assert!(close(d.throughput(65536.0, 1.0), 0.49e9));
        assert!(close(d.throughput(262144.0, 128.0), 5.88e9));
        // 128 KiB at QD1: the geometric mean of the two sizes' figures.
        assert!(close(
            d.throughput(131072.0, 1.0),
            (0.49e9f64 * 1.06e9).sqrt()
        ));
        // Between depths: geometric too (QD 1 and 128 around QD 128^0.5).
        let mid = d.throughput(65536.0, 128f64.sqrt());
        assert!(close(mid, (0.49e9f64 * 3.90e9).sqrt()));
        // Beyond the largest size and depth: flat; below the smallest size: fixed time.
        assert!(close(d.throughput(1e9, 1.0), 1.06e9));
        assert!(close(d.throughput(65536.0, 1024.0), 3.90e9));
        assert!(close(d.throughput(16384.0, 1.0), 0.49e9 / 4.0));
    }

    #[test]
    fn curves_grow_with_size_and_depth() {
        for d in [fio_like(), DriveCurve::from_figures(3.5, 90.0, 1.5)] {
            let mut last = 0.0;
            for k in [4.0, 16.0, 64.0, 128.0, 256.0, 1024.0, 4096.0] {
                let t = d.throughput(k * 1024.0, 1.0);
                assert!(t >= last, "{k} KiB");
                last = t;
                let mut lq = 0.0;
                for q in [1.0, 2.0, 4.0, 32.0, 128.0] {
                    let tq = d.throughput(k * 1024.0, q);
                    assert!(tq >= lq - 1e-6, "{k} KiB QD {q}");
                    lq = tq;
                }
            }
        }
    }

    #[test]
    fn bad_points_are_refused() {
        let base = || DriveCurve::from_figures(7.0, 80.0, 2.0);
        let p = |k, q, g| DrivePoint {
            block_kib: k,
            queue_depth: q,
            gbs: g,
        };
        let e = base()
            .with_points(vec![p(64.0, 1.0, 1.0), p(256.0, 1.0, 2.0)])
            .unwrap_err();
        assert!(e.contains("all at queue depth 1: give two depths"), "{e}");
        let e = base().with_points(vec![p(64.0, 0.0, 1.0)]).unwrap_err();
        assert!(e.contains("queue_depth must be at least 1"), "{e}");
        let e = base().with_points(vec![p(64.0, 1.0, -1.0)]).unwrap_err();
        assert!(e.contains("gbs must be a positive number"), "{e}");
        let e = base().with_points(vec![p(0.0, 1.0, 1.0)]).unwrap_err();
        assert!(e.contains("block_kib"), "{e}");
        let e = base()
            .with_points(vec![
                p(64.0, 1.0, 1.0),
                p(64.0, 1.0, 2.0),
                p(64.0, 8.0, 3.0),
            ])
            .unwrap_err();
        assert!(e.contains("two points"), "{e}");
        let e = base()
            .with_points(vec![p(256.0, 1.0, 1.0), p(256.0, 8.0, 0.5)])
            .unwrap_err();
        assert!(
            e.contains("256 KiB at queue depth 8 reads 0.5 GB/s, less than the 1 GB/s at depth 1"),
            "{e}"
        );
        // Within fio's noise, and a deeper queue at another size, are not refused.
        base()
            .with_points(vec![
                p(256.0, 1.0, 1.0),
                p(256.0, 8.0, 5.9),
                p(256.0, 32.0, 5.6),
                p(1024.0, 32.0, 0.5),
            ])
            .unwrap();
    }
}
