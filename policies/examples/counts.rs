//! Print miss counts of policies over an id sequence, for cross-checks against other
//! simulators (e.g. libCacheSim):
//!
//! ```text
//! cargo run --release -p moe-spill-policies --example counts -- IDS_FILE SPECS CAPS
//! ```
//! IDS_FILE holds one id (< 65536) per line; SPECS is a comma-separated list of policy
//! specs (`lru,arc,opt`); CAPS a comma-separated list of capacities. Prints one line
//! `spec capacity accesses misses` per pair. For `pinned:` the experts per layer are
//! taken from the env var N_EXPERTS (default 64); for `pin-hot:` the profile is the
//! sequence itself; `linux` takes the bytes of one object from EXPERT_BYTES (unset:
//! its active:inactive ratio is 1).

use moe_spill_policies::{BuildContext, PolicySpec};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: counts IDS_FILE SPECS CAPS");
        std::process::exit(2);
    }
    let text = std::fs::read_to_string(&args[1]).expect("read ids");
    let ids: Vec<u16> = text
        .split_whitespace()
        .map(|t| t.parse().expect("id < 65536"))
        .collect();
    let n_ids = ids.iter().map(|&i| i as usize + 1).max().unwrap_or(1);
    let mut profile = vec![0u64; n_ids];
    for &i in &ids {
        profile[i as usize] += 1;
    }
    let n_experts = std::env::var("N_EXPERTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    // `linux` sizes its active:inactive ratio from the cache's bytes.
    let expert_bytes = std::env::var("EXPERT_BYTES")
        .ok()
        .and_then(|v| v.parse().ok());
    for spec in args[2].split(',') {
        let spec = PolicySpec::parse(spec).unwrap_or_else(|e| panic!("{e}"));
        for cap in args[3].split(',') {
            let capacity: usize = cap.parse().expect("capacity");
            let ctx = BuildContext {
                capacity,
                n_ids,
                n_experts,
                first_slot: 0,
                future: Some(&ids),
                opt_future: None,
                profile: Some(&profile),
                expert_bytes,
            };
            let mut p = spec.build(&ctx).unwrap_or_else(|e| panic!("{e}"));
            let mut misses = Vec::new();
            p.replay(&ids, &mut misses);
            println!("{spec} {capacity} {} {}", ids.len(), misses.len());
        }
    }
}
