//! Compute threads that fault: how long a token's CPU-side expert work takes when each of
//! `threads` threads waits for its own page faults and multiplies its own rows.
//!
//! ggml splits a matrix's rows between its threads; under `--io mmap` a thread that
//! touches a missing page waits for the read-around window, then multiplies the rows it
//! brought in, then faults again. The threads drift apart, so while some wait for the
//! drive the others multiply: the drive and the RAM work at the same time, and the token
//! takes less than the sum of the two (the four published llama.cpp-mmap decodes of the
//! ik_llama.cpp author's 9950X + T700 box read at about the drive's speed alone,
//! docs/VALIDATION.md). Nor does it take only the longer of the two: a thread that
//! multiplies is not faulting, so fewer reads are in flight and the drive, near queue
//! depth 1 per thread, slows.
//!
//! The model is a closed queueing network: `threads` customers, each cycling through one
//! window's read (the drive, shared: its throughput at the number of windows in flight,
//! [`crate::drive::DriveCurve`]), the page cache's work on that window (each thread on
//! its own core: a delay), and its share of the products (shared: the matmul rate of the
//! threads multiplying, capped by the RAM's bandwidth). Mean value analysis with
//! load-dependent stations (Reiser and Lavenberg, 1980) gives its throughput exactly for
//! exponential service times. One thread gives the sum of the three, as before this
//! overlap was priced; so does a step whose faults are taken by one thread (op offload).
//!
//! The drift has a start and an end: ggml's threads meet at a barrier after every op of
//! the graph, and `mul_mat_id` meets once more before it touches a weight, so each
//! expert product (one op per expert matrix) starts with every thread faulting at once
//! and ends when its last thread does. An op of `K` windows is a finite run of that
//! network: `N` threads start together at the drive, each takes the next window while
//! any is left (ggml's chunk counter), and the op ends when the last one is through.
//! [`ops_seconds`] solves that chain exactly for its expected time (exponential service,
//! as the mean value analysis assumes): with few windows per thread it is close to lock
//! step (all fault, then all multiply), with many it is the steady drift.

/// One station of the cycle: the seconds a whole token's work takes there.
pub enum Station<'a> {
    /// Shared: the token's seconds when `j` threads are there at once.
    Shared(&'a dyn Fn(f64) -> f64),
    /// Each thread on its own: the token's seconds for one thread doing all of it.
    Own(f64),
}

/// The most threads the recursion follows: it takes threads^2 steps, and long before a
/// thousand threads the shared stations are saturated, so more change nothing.
const MAX_THREADS: u32 = 1024;

/// Seconds for a token's work split into `cycles` equal cycles through `stations`, with
/// `threads` threads cycling in steady state. Zero cycles: the token's seconds at the
/// shared stations with every thread there (no reads to overlap).
pub fn token_seconds(threads: u32, cycles: f64, stations: &[Station]) -> f64 {
    if cycles <= 0.0 {
        let all = threads.max(1) as f64;
        return stations
            .iter()
            .map(|s| match s {
                Station::Shared(f) => f(all),
                Station::Own(t) => t / all,
            })
            .sum();
    }
    let n_threads = threads.clamp(1, MAX_THREADS) as usize;
    // p[k][j]: the chance that j threads are at shared station k (population so far).
    let mut p: Vec<Vec<f64>> = stations
        .iter()
        .map(|_| {
            let mut v = vec![0.0; n_threads + 1];
            v[0] = 1.0;
            v
        })
        .collect();
    // 1 / the rate at which station k completes visits with j threads there: the
    // token's seconds at that concurrency over its cycles.
    let visit = |k: usize, j: usize| match &stations[k] {
        Station::Shared(f) => f(j as f64) / cycles,
        Station::Own(t) => t / cycles,
    };
    let mut throughput = 0.0;
    for n in 1..=n_threads {
        let mut residence = 0.0;
        for (k, s) in stations.iter().enumerate() {
            residence += match s {
                Station::Own(_) => visit(k, 1),
                // Arriving to find j - 1 others, a visit leaves after j completions.
                Station::Shared(_) => (1..=n).map(|j| j as f64 * visit(k, j) * p[k][j - 1]).sum(),
            };
        }
        throughput = n as f64 / residence;
        for (k, s) in stations.iter().enumerate() {
            if let Station::Shared(_) = s {
                let prev = p[k].clone();
                let mut busy = 0.0;
                for j in 1..=n {
                    p[k][j] = throughput * visit(k, j) * prev[j - 1];
                    busy += p[k][j];
                }
                p[k][0] = (1.0 - busy).max(0.0);
            }
        }
    }
    cycles / throughput
}

/// The most threads an op's chain follows: its drain has threads^3 / 6 states. Far below
/// that the drive (at most a slice's windows in flight) and the RAM are saturated.
pub(crate) const MAX_OP_THREADS: usize = 256;

/// Levels of an op's chain followed before its steps are taken as settled (they settle
/// within a few times the threads; this only bounds the work).
const MAX_LEVELS: usize = 1 << 14;

/// Seconds for a token's faults and products run as `ops` ops of `cycles / ops` windows
/// each (at least one), every op started by `threads` threads together and ended at a
/// barrier: the drive (`drive(j)`: the token's seconds with `j` windows in flight), each
/// thread's page-cache work (`own`: the token's seconds for one thread) and the products
/// (`work(j)`: the token's seconds with `j` threads at them). No ops: the steady drift.
pub fn ops_seconds(
    threads: u32,
    cycles: f64,
    ops: f64,
    drive: &dyn Fn(f64) -> f64,
    own: f64,
    work: &dyn Fn(f64) -> f64,
) -> f64 {
    let stations = [
        Station::Shared(drive),
        Station::Own(own),
        Station::Shared(work),
    ];
    if cycles <= 0.0 || ops.is_nan() || ops <= 0.0 || threads <= 1 {
        return token_seconds(threads, cycles, &stations);
    }
    let k = (cycles / ops).max(1.0);
    let n = (threads as usize).min(MAX_OP_THREADS);
    // Seconds per visit of one window, with j there; a station that takes no time is
    // given a sliver of one so that the chain stays finite.
    let total = drive(1.0) + own + work(1.0);
    let floor = 1e-12 * total.max(f64::MIN_POSITIVE);
    let per_visit = |t: f64| t.max(floor) / cycles;
    let r_drive: Vec<f64> = (0..=n).map(|j| 1.0 / per_visit(drive(j as f64))).collect();
    let r_work: Vec<f64> = (0..=n).map(|j| 1.0 / per_visit(work(j as f64))).collect();
    let r_own = 1.0 / per_visit(own);
    cycles / k * op_seconds(n, k, &r_drive, r_own, &r_work)
}

/// Expected seconds of one op of `k` windows (interpolated between the whole numbers
/// around it): `n` threads start at the drive together; a thread through the drive (rate
/// `r_drive[j]` with j there), its own page-cache work (`r_own` each) and the products
/// (`r_work[j]`) takes the next window, or stops when none is left. A continuous-time
/// chain on the threads at each station and the windows not yet started; every move
/// takes a thread one station on, so the expected time to the end follows in one pass.
fn op_seconds(n: usize, k: f64, r_drive: &[f64], r_own: f64, r_work: &[f64]) -> f64 {
    // The drain (no window left): a threads at the drive, b at their own work, c at the
    // products, a + b + c <= n, in a triangular table.
    let mut start = vec![vec![0usize; n + 1]; n + 1];
    let mut len = 0;
    for (a, row) in start.iter_mut().enumerate() {
        for (b, off) in row.iter_mut().enumerate().take(n - a + 1) {
            *off = len;
            len += n - a - b + 1;
        }
    }
    let mut drain = vec![0.0f64; len];
    let at = |a: usize, b: usize, c: usize| start[a][b] + c;
    for a in 0..=n {
        for b in 0..=n - a {
            for c in 0..=n - a - b {
                if a + b + c == 0 {
                    continue;
                }
                drain[at(a, b, c)] = expected_time([
                    (a > 0).then(|| (r_drive[a], drain[at(a - 1, b + 1, c)])),
                    (b > 0).then(|| (b as f64 * r_own, drain[at(a, b - 1, c + 1)])),
                    (c > 0).then(|| (r_work[c], drain[at(a, b, c - 1)])),
                ]);
            }
        }
    }
    // An op of m windows, m <= n: m threads start, the rest wait at the barrier.
    let (lo, hi) = (k.floor() as usize, k.ceil() as usize);
    let frac = k - lo as f64;
    if hi <= n {
        return (1.0 - frac) * drain[at(lo, 0, 0)] + frac * drain[at(hi, 0, 0)];
    }
    // Windows left to start: level p holds the states with every thread busy
    // (a + b + c = n) and p windows not yet started; a thread through the products
    // takes one, so level p leans on level p - 1, the drain at p = 0.
    let idx = |a: usize, b: usize| a * (n + 1) + b;
    let mut prev: Vec<f64> = vec![0.0; (n + 1) * (n + 1)];
    for a in 0..=n {
        for b in 0..=n - a {
            prev[idx(a, b)] = drain[at(a, b, n - a - b)];
        }
    }
    let mut cur = prev.clone();
    // Every level has the same moves out of each state: their rates over the state's
    // total, and its mean holding time, computed once (a multiply per move, not a
    // division per state and level).
    let weights: Vec<[f64; 4]> = (0..(n + 1) * (n + 1))
        .map(|i| {
            let (a, b) = (i / (n + 1), i % (n + 1));
            if a + b > n {
                return [0.0; 4];
            }
            let c = n - a - b;
            let rd = if a > 0 { r_drive[a] } else { 0.0 };
            let ro = b as f64 * r_own;
            let rw = if c > 0 { r_work[c] } else { 0.0 };
            let rate = rd + ro + rw;
            [1.0 / rate, rd / rate, ro / rate, rw / rate]
        })
        .collect();
    let mut step_prev: Option<Vec<f64>> = None;
    let mut values = [drain[at(n, 0, 0)], 0.0];
    let (want_lo, want_hi) = (lo.saturating_sub(n), hi - n);
    if want_lo == 0 {
        values[0] = prev[idx(n, 0)];
    }
    let mut level = 0;
    while level < want_hi {
        level += 1;
        for a in 0..=n {
            for b in 0..=n - a {
                let c = n - a - b;
                let [hold, wd, wo, ww] = weights[idx(a, b)];
                let mut t = hold;
                if a > 0 {
                    t += wd * cur[idx(a - 1, b + 1)];
                }
                if b > 0 {
                    t += wo * cur[idx(a, b - 1)];
                }
                if c > 0 {
                    t += ww * prev[idx(a + 1, b)];
                }
                cur[idx(a, b)] = t;
            }
        }
        let here = cur[idx(n, 0)];
        if level == want_lo {
            values[0] = here;
        }
        if level == want_hi {
            values[1] = here;
            break;
        }
        // Far from the end every level adds the same time to every state (the steady
        // drift's time per window): the rest follows in one step.
        let step: Vec<f64> = cur.iter().zip(&prev).map(|(x, y)| x - y).collect();
        if let Some(sp) = &step_prev {
            let settled = level >= MAX_LEVELS
                || step
                    .iter()
                    .zip(sp)
                    .all(|(d, e)| (d - e).abs() <= 1e-13 * here.abs());
            if settled {
                let d = step[idx(n, 0)];
                if want_lo > level {
                    values[0] = here + (want_lo - level) as f64 * d;
                }
                values[1] = here + (want_hi - level) as f64 * d;
                break;
            }
        }
        step_prev = Some(step);
        std::mem::swap(&mut prev, &mut cur);
    }
    (1.0 - frac) * values[0] + frac * values[1]
}

/// A state's expected time to the op's end: its mean holding time, then one of the
/// moves open to it (a thread through the drive, its own work, the products: none where
/// no thread is there) in proportion to its rate, each given as (rate, the expected time
/// from the state it leads to).
fn expected_time(moves: [Option<(f64, f64)>; 3]) -> f64 {
    let rate = moves.iter().flatten().fold(0.0, |r, m| r + m.0);
    moves.iter().flatten().fold(1.0, |t, m| t + m.0 * m.1) / rate
}

/// The layers (of `layers`) with at least one of a token's `misses`, spread over them at
/// random: the expert products whose threads fault before their barrier.
pub fn layers_with_a_miss(layers: f64, misses: f64) -> f64 {
    if layers <= 0.0 || misses <= 0.0 {
        return 0.0;
    }
    layers * (1.0 - (1.0 - 1.0 / layers.max(1.0)).powf(misses))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
    }

    #[test]
    fn one_thread_takes_the_sum() {
        let drive = |q: f64| 2.0 / q.min(4.0);
        let cpu = |j: f64| 3.0 / j;
        let t = token_seconds(
            1,
            100.0,
            &[
                Station::Shared(&drive),
                Station::Own(0.5),
                Station::Shared(&cpu),
            ],
        );
        assert!(close(t, 2.0 + 0.5 + 3.0), "{t}");
    }

    /// The op's chain by simulation: threads at each station, windows left; exponential
    /// holding times, a seeded generator (an xorshift, so the test needs no crate).
    fn simulated_op(
        n: usize,
        k: usize,
        r_drive: &[f64],
        r_own: f64,
        r_work: &[f64],
        runs: usize,
    ) -> f64 {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut uniform = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        let mut total = 0.0;
        for _ in 0..runs {
            let first = k.min(n);
            let (mut a, mut b, mut c, mut left) = (first, 0usize, 0usize, k - first);
            let mut t = 0.0;
            while a + b + c > 0 {
                let (ra, rb, rc) = (
                    if a > 0 { r_drive[a] } else { 0.0 },
                    b as f64 * r_own,
                    if c > 0 { r_work[c] } else { 0.0 },
                );
                let rate = ra + rb + rc;
                t += -uniform().ln() / rate;
                let u = uniform() * rate;
                if u < ra {
                    a -= 1;
                    b += 1;
                } else if u < ra + rb {
                    b -= 1;
                    c += 1;
                } else {
                    c -= 1;
                    if left > 0 {
                        left -= 1;
                        a += 1;
                    }
                }
            }
            total += t;
        }
        total / runs as f64
    }

    /// A drive that gains with depth up to its rated rate, products capped by RAM.
    fn rates(n: usize) -> (Vec<f64>, f64, Vec<f64>) {
        let drive: Vec<f64> = (0..=n)
            .map(|j| 1.0 / (0.3 + 0.7 / (j.max(1) as f64)))
            .collect();
        let work: Vec<f64> = (0..=n).map(|j| (j as f64).min(3.0) / 1.5).collect();
        (drive, 5.0, work)
    }

    #[test]
    fn an_op_takes_what_its_simulation_takes() {
        for (n, k) in [(1, 7), (4, 3), (4, 4), (8, 5), (8, 40), (16, 51)] {
            let (d, o, w) = rates(n);
            let exact = op_seconds(n, k as f64, &d, o, &w);
            let sim = simulated_op(n, k, &d, o, &w, 40_000);
            assert!(
                (exact / sim - 1.0).abs() < 0.01,
                "{n} threads, {k} windows: {exact} vs {sim}"
            );
        }
        // One thread: the sum of its visits, window after window.
        let (d, o, w) = rates(1);
        let one = 7.0 * (1.0 / d[1] + 1.0 / o + 1.0 / w[1]);
        assert!(close(op_seconds(1, 7.0, &d, o, &w), one));
        // Between whole numbers of windows: between their times.
        let (d, o, w) = rates(8);
        let (a, b) = (
            op_seconds(8, 12.0, &d, o, &w),
            op_seconds(8, 13.0, &d, o, &w),
        );
        assert!(close(op_seconds(8, 12.25, &d, o, &w), 0.75 * a + 0.25 * b));
    }

    #[test]
    fn long_ops_drift_and_short_ones_go_in_lock_step() {
        let drive = |q: f64| 2.0 * (0.3 + 0.7 / q.min(16.0));
        let cpu = |j: f64| (1.0f64).max(4.0 / j);
        let cycles = 4000.0;
        let st = [
            Station::Shared(&drive),
            Station::Own(0.2),
            Station::Shared(&cpu),
        ];
        let drift = token_seconds(16, cycles, &st);
        let lock = drive(16.0) + 0.2 / 16.0 + cpu(16.0);
        // Four ops of a thousand windows: the start and the end are a sliver of each.
        let long = ops_seconds(16, cycles, 4.0, &drive, 0.2, &cpu);
        assert!(long > drift && long < 1.01 * drift, "{long} vs {drift}");
        // One window per thread per op: every op is one round, all fault then all
        // multiply, and the drive's completions spread them a little.
        let short = ops_seconds(16, cycles, cycles / 16.0, &drive, 0.2, &cpu);
        assert!(
            short > drift + 0.5 * (lock - drift) && short < 1.1 * lock,
            "{short} vs lock step {lock}, drift {drift}"
        );
        // More ops, never faster; fewer threads, never faster.
        let mut last = 0.0;
        for ops in [1.0, 10.0, 50.0, 125.0, 250.0] {
            let t = ops_seconds(16, cycles, ops, &drive, 0.2, &cpu);
            assert!(t >= last, "{ops} ops: {t} < {last}");
            last = t;
        }
        assert!(
            ops_seconds(8, cycles, 125.0, &drive, 0.2, &cpu)
                > ops_seconds(16, cycles, 125.0, &drive, 0.2, &cpu)
        );
        // No ops, or one thread: the steady network as before.
        assert_eq!(ops_seconds(16, cycles, 0.0, &drive, 0.2, &cpu), drift);
        let one = ops_seconds(1, cycles, 100.0, &drive, 0.2, &cpu);
        assert!(close(one, drive(1.0) + 0.2 + cpu(1.0)), "{one}");
    }

    #[test]
    fn misses_spread_over_layers() {
        assert_eq!(layers_with_a_miss(60.0, 0.0), 0.0);
        assert!(close(layers_with_a_miss(60.0, 1.0), 1.0));
        // Two misses: the second lands in the first's layer once in 60 times.
        assert!(close(layers_with_a_miss(60.0, 2.0), 2.0 - 1.0 / 60.0));
        let many = layers_with_a_miss(60.0, 600.0);
        assert!(many < 60.0 && many > 59.99, "{many}");
    }

    #[test]
    fn beyond_a_thousand_threads_nothing_changes() {
        let drive = |q: f64| 2.0 / q.min(64.0);
        let cpu = |j: f64| (0.5f64).max(64.0 / j);
        let st = [
            Station::Shared(&drive),
            Station::Own(1.0),
            Station::Shared(&cpu),
        ];
        let (a, b) = (
            token_seconds(1024, 1e4, &st),
            token_seconds(16_384, 1e4, &st),
        );
        assert_eq!(a, b);
        // Saturated: the busier shared station alone, within a hair.
        let floor = drive(1024.0).max(cpu(1024.0));
        assert!(a >= floor && a < 1.01 * floor, "{a} vs {floor}");
    }

    #[test]
    fn no_reads_is_the_compute_of_all_threads() {
        let drive = |_: f64| 0.0;
        let cpu = |j: f64| 8.0 / j;
        let t = token_seconds(8, 0.0, &[Station::Shared(&drive), Station::Shared(&cpu)]);
        assert!(close(t, 1.0), "{t}");
    }

    /// Two stations that each serve one visit at a time at a fixed rate: the machine
    /// repair model, whose throughput has a closed form (a birth-death chain).
    #[test]
    fn two_single_servers_match_the_closed_form() {
        let (a, b) = (3.0, 5.0); // a token's seconds at each, 10 cycles
        let cycles = 10.0;
        let (sa, sb) = (a / cycles, b / cycles);
        let fa = |_: f64| a;
        let fb = |_: f64| b;
        for n in 1..=6u32 {
            let t = token_seconds(n, cycles, &[Station::Shared(&fa), Station::Shared(&fb)]);
            // k threads at A, n - k at B: A serves at 1 / sa while k > 0, B at 1 / sb
            // while k < n, so P(k) is proportional to (sa / sb)^k.
            let r = sa / sb;
            let w: Vec<f64> = (0..=n).map(|k| r.powi(k as i32)).collect();
            let z: f64 = w.iter().sum();
            let busy_a = 1.0 - w[0] / z;
            let x = busy_a / sa;
            assert!(close(t, cycles / x), "n {n}: {t} vs {}", cycles / x);
        }
    }

    #[test]
    fn many_threads_lie_between_the_longer_and_the_sum() {
        // A drive that gains with depth up to its rated rate, products capped by RAM.
        let drive = |q: f64| 2.0 * (0.3 + 0.7 / q);
        let cpu = |j: f64| (1.0f64).max(4.0 / j);
        let t16 = token_seconds(
            16,
            1000.0,
            &[
                Station::Shared(&drive),
                Station::Own(0.2),
                Station::Shared(&cpu),
            ],
        );
        let alone = drive(16.0) + 0.2 / 16.0 + cpu(16.0);
        let longer = drive(16.0).max(cpu(16.0));
        assert!(t16 < alone && t16 > longer, "{longer} < {t16} < {alone}");
        // More threads, no slower.
        let t4 = token_seconds(
            4,
            1000.0,
            &[
                Station::Shared(&drive),
                Station::Own(0.2),
                Station::Shared(&cpu),
            ],
        );
        assert!(t4 > t16);
    }
}
