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
//! The drift has an end: ggml's threads meet at a barrier after every operation of the
//! graph, and an expert product (one op per expert matrix) ends when its slowest thread
//! does. When the op's rows run out, each thread is somewhere in its current cycle of
//! fault and products; with their phases spread evenly over the cycle time `C`, the last
//! one ends `C N / (N + 1)` later, where the network's throughput would have done the
//! remaining work in `C / 2`: each barrier costs `C (N - 1) / (2 (N + 1))`. The token
//! takes at most what the threads take in lock step (all fault, then all multiply: no
//! overlap), which is where barriers come faster than the cycles.

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
/// `threads` threads cycling and meeting at `barriers` barriers. Zero cycles: the token's
/// seconds at the shared stations with every thread there (no reads to overlap).
pub fn token_seconds(threads: u32, cycles: f64, barriers: f64, stations: &[Station]) -> f64 {
    let all = threads.max(1) as f64;
    // Every thread at each station in turn: lock step, nothing overlapped.
    let lock_step: f64 = stations
        .iter()
        .map(|s| match s {
            Station::Shared(f) => f(all),
            Station::Own(t) => t / all,
        })
        .sum();
    if cycles <= 0.0 {
        return lock_step;
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
    let drifting = cycles / throughput;
    // Each barrier: the last thread's residual cycle against the mean's half of one.
    let cycle = n_threads as f64 / throughput;
    let n = n_threads as f64;
    let tails = barriers.max(0.0) * cycle * (n - 1.0) / (2.0 * (n + 1.0));
    (drifting + tails).min(lock_step.max(drifting))
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
            0.0,
            &[
                Station::Shared(&drive),
                Station::Own(0.5),
                Station::Shared(&cpu),
            ],
        );
        assert!(close(t, 2.0 + 0.5 + 3.0), "{t}");
    }

    #[test]
    fn a_barrier_costs_the_last_threads_residual_cycle() {
        let drive = |q: f64| 2.0 * (0.3 + 0.7 / q);
        let cpu = |j: f64| (1.0f64).max(4.0 / j);
        let st = [
            Station::Shared(&drive),
            Station::Own(0.2),
            Station::Shared(&cpu),
        ];
        let cycles = 1000.0;
        // One thread has no one to wait for.
        assert_eq!(
            token_seconds(1, cycles, 50.0, &st),
            token_seconds(1, cycles, 0.0, &st)
        );
        // Eight threads, each cycle C = 8 t0 / cycles: 8 barriers cost 8 C 7 / 18.
        let t0 = token_seconds(8, cycles, 0.0, &st);
        let c = 8.0 * t0 / cycles;
        let t = token_seconds(8, cycles, 8.0, &st);
        assert!(close(t, t0 + 8.0 * c * 7.0 / 18.0), "{t} vs {t0}");
        // Barriers faster than the cycles: the threads in lock step, no overlap.
        let lock = drive(8.0) + 0.2 / 8.0 + cpu(8.0);
        assert!(close(token_seconds(8, cycles, 1e6, &st), lock));
        assert!(t < lock);
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
            token_seconds(1024, 1e4, 0.0, &st),
            token_seconds(16_384, 1e4, 0.0, &st),
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
        let t = token_seconds(
            8,
            0.0,
            0.0,
            &[Station::Shared(&drive), Station::Shared(&cpu)],
        );
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
            let t = token_seconds(
                n,
                cycles,
                0.0,
                &[Station::Shared(&fa), Station::Shared(&fb)],
            );
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
            0.0,
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
            0.0,
            &[
                Station::Shared(&drive),
                Station::Own(0.2),
                Station::Shared(&cpu),
            ],
        );
        assert!(t4 > t16);
    }
}
