//! The I/O model on the command line: `--io` adds its columns and changes only the
//! time; bad engine settings and drive curves are refused with one line and exit 2.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_moe-spill");

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn refused(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(out.stdout.is_empty());
    assert!(err.contains(needle), "{err}");
}

fn csv(out: &Output) -> (Vec<String>, Vec<String>) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let head = r.headers().unwrap().iter().map(String::from).collect();
    let row = r
        .records()
        .next()
        .unwrap()
        .unwrap()
        .iter()
        .map(String::from)
        .collect();
    (head, row)
}

#[test]
fn io_adds_its_columns_and_keeps_the_counts() {
    let base = [
        "simulate",
        "--policy",
        "lru",
        "--cache-experts",
        "4000",
        "--format",
        "csv",
        "-q",
    ];
    let mut rated = base.to_vec();
    rated.extend(["--io", "rated"]);
    let (h0, r0) = csv(&run(&rated));
    // The default is mmap.
    let (h1, r1) = csv(&run(&base));
    // Every time model gives the same columns: files of both concatenate.
    assert_eq!(h0, h1);
    assert_eq!(
        &h1[h1.len() - 3..],
        ["io", "device_bytes_per_token", "t_compute_ms"]
    );
    let col = |h: &[String], r: &[String], name: &str| {
        r[h.iter().position(|x| x == name).unwrap()].clone()
    };
    for same in ["hits", "misses", "ssd_bytes", "analytic_tok_s"] {
        assert_eq!(col(&h0, &r0, same), col(&h1, &r1, same), "{same}");
    }
    assert_eq!(col(&h1, &r1, "io"), "mmap");
    // The rated model reads the missed bytes and prices no compute.
    assert_eq!(col(&h0, &r0, "io"), "rated");
    assert_eq!(
        col(&h0, &r0, "device_bytes_per_token"),
        col(&h0, &r0, "ssd_bytes_per_token")
    );
    assert_eq!(col(&h0, &r0, "t_compute_ms"), "");
    // Faults in 256 KiB windows are slower than the rated bandwidth, and read more.
    let tok = |h: &[String], r: &[String]| col(h, r, "est_tok_s").parse::<f64>().unwrap();
    assert!(tok(&h1, &r1) < tok(&h0, &r0));
    let dev: f64 = col(&h1, &r1, "device_bytes_per_token").parse().unwrap();
    let ssd: f64 = col(&h1, &r1, "ssd_bytes_per_token").parse().unwrap();
    assert!(dev > ssd);
    // More fault threads, a deeper queue: faster.
    let mut t16 = base.to_vec();
    t16.extend(["--threads", "16"]);
    let mut t1 = base.to_vec();
    t1.extend(["--threads", "1"]);
    let (ha, ra) = csv(&run(&t16));
    let (hb, rb) = csv(&run(&t1));
    assert!(tok(&ha, &ra) > tok(&hb, &rb));
}

#[test]
fn bad_engine_settings_are_refused() {
    let s = ["simulate", "--cache-experts", "10", "-q"];
    let with = |extra: &[&str]| {
        let mut v = s.to_vec();
        v.extend(extra);
        run(&v)
    };
    refused(&with(&["--io", "nope"]), "invalid value 'nope'");
    refused(
        &with(&["--io", "pread", "--io-workers", "0"]),
        "--io-workers",
    );
    for kb in ["0", "5", "999999999"] {
        refused(
            &with(&["--io", "mmap", "--read-ahead-kb", kb]),
            "read_ahead_kb is KiB in whole 4 KiB pages, from 4 to 1048576",
        );
    }
    refused(
        &with(&["--io", "mmap", "--ssd-latency-us=-5"]),
        "SSD latency_us must be a positive number",
    );
    refused(
        &with(&["--io", "mmap", "--ssd-stream-gbs", "0"]),
        "SSD stream_gbs must be a positive number",
    );
    refused(
        &with(&["--io", "mmap", "--threads", "0"]),
        "CPU threads must be at least 1",
    );
    refused(
        &with(&["--io", "pread", "--max-sectors-kb", "2"]),
        "SSD max_sectors_kb must be at least 4 (one page), got 2",
    );
    refused(
        &with(&["--io", "pread", "--max-sectors-kb=-1"]),
        "--max-sectors-kb",
    );
    // A figure from a flag is named by its flag.
    refused(
        &with(&["--ssd-bw", "7000"]),
        "SSD bandwidth_gbs = 7000 is more than any machine has (at most 200): the field is in GB/s per drive (7 for a 7,000 MB/s drive) (from --ssd-bw)",
    );
    refused(
        &with(&["--io", "mmap", "--ssd-latency-us=-5"]),
        "(from --ssd-latency-us)",
    );
    // A flag the chosen engine would ignore is refused, under simulate and sweep alike.
    for (engines, flag, want) in [
        (
            &["mmap", "rated"][..],
            &["--no-read-overlap"][..],
            "--no-read-overlap is for --io pread and direct, whose worker threads",
        ),
        (
            &["mmap", "rated"],
            &["--io-workers", "4"],
            "--io-workers is for --io pread and direct",
        ),
        (
            &["pread", "direct", "rated"],
            &["--mmap-advice", "willneed"],
            "--mmap-advice is for --io mmap",
        ),
        (
            &["direct", "rated"],
            &["--read-ahead-kb", "256"],
            "--read-ahead-kb is for --io mmap and pread",
        ),
    ] {
        for io in engines {
            let mut args = vec!["--io", io];
            args.extend(flag);
            refused(&with(&args), want);
        }
    }
    // The message says what the chosen engine does instead.
    refused(
        &with(&["--io", "rated", "--io-workers", "4"]),
        "--io-workers is for --io pread and direct, their reader threads; --io rated reads nothing",
    );
    // Under mmap the read-around is sequential's and normal's only.
    for advice in ["random", "willneed"] {
        refused(
            &with(&["--mmap-advice", advice, "--read-ahead-kb", "256"]),
            "--read-ahead-kb sets the read-around of --mmap-advice sequential and normal",
        );
    }
    refused(
        &run(&["sweep", "--io", "pread", "--mmap-advice", "normal", "-q"]),
        "--mmap-advice is for --io mmap",
    );
    // The flags each engine uses are taken, and their defaults are the runs without them.
    let est = |extra: &[&str]| {
        let mut v = s.to_vec();
        v.extend(extra);
        v.extend(["--format", "csv"]);
        let (h, r) = csv(&run(&v));
        r[h.iter().position(|c| c == "est_tok_s").unwrap()].clone()
    };
    assert_eq!(
        est(&["--io", "mmap"]),
        est(&[
            "--io",
            "mmap",
            "--mmap-advice",
            "sequential",
            "--read-ahead-kb",
            "128"
        ])
    );
    assert_eq!(
        est(&["--io", "pread"]),
        est(&[
            "--io",
            "pread",
            "--io-workers",
            "8",
            "--read-ahead-kb",
            "128"
        ])
    );
    for ok in [
        &[
            "--io",
            "mmap",
            "--mmap-advice",
            "sequential",
            "--read-ahead-kb",
            "128",
        ][..],
        &[
            "--io",
            "pread",
            "--io-workers",
            "8",
            "--read-ahead-kb",
            "128",
        ],
        &["--io", "direct", "--io-workers", "8", "--no-read-overlap"],
    ] {
        let mut v = s.to_vec();
        v.extend(ok);
        v.extend(["--format", "csv"]);
        let out = run(&v);
        assert!(
            out.status.success(),
            "{ok:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn serial_reads_add_to_the_compute_and_read_the_same() {
    let sim = |extra: &[&str]| {
        let mut a = vec![
            "simulate",
            "--policy",
            "lru",
            "--cache-experts",
            "4000",
            "--hw",
            "desktop-cpu",
            "--format",
            "csv",
            "-q",
        ];
        a.extend(extra);
        let (h, r) = csv(&run(&a));
        move |name: &str| {
            r[h.iter().position(|x| x == name).unwrap()]
                .parse::<f64>()
                .unwrap()
        }
    };
    for io in ["pread", "direct"] {
        let overlap = sim(&["--io", io]);
        let serial = sim(&["--io", io, "--no-read-overlap"]);
        for same in [
            "device_bytes_per_token",
            "t_ssd_ms",
            "t_ram_ms",
            "t_compute_ms",
        ] {
            assert_eq!(overlap(same), serial(same), "{io} {same}");
        }
        assert!(serial("est_tok_s") < overlap("est_tok_s"), "{io}");
    }
}

#[test]
fn max_sectors_kb_shapes_buffered_and_direct_reads_not_faults() {
    let est = |extra: &[&str]| {
        let mut v = vec![
            "simulate",
            "--policy",
            "lru",
            "--cache-experts",
            "4000",
            "--format",
            "csv",
            "-q",
        ];
        v.extend(extra);
        let (h, r) = csv(&run(&v));
        let col = |name: &str| {
            r[h.iter().position(|x| x == name).unwrap()]
                .parse::<f64>()
                .unwrap()
        };
        (col("est_tok_s"), col("device_bytes_per_token"))
    };
    // Faults read around by read_ahead_kb: max_sectors_kb changes nothing.
    assert_eq!(
        est(&["--io", "mmap"]),
        est(&["--io", "mmap", "--max-sectors-kb", "4096"])
    );
    // The default is 1280.
    for io in ["pread", "direct"] {
        assert_eq!(
            est(&["--io", io]),
            est(&["--io", io, "--max-sectors-kb", "1280"])
        );
    }
    // Buffered reads at the readahead window (128 KiB) read less past each expert than
    // in 1280 KiB windows; O_DIRECT reads the same bytes in smaller requests.
    let (t128, b128) = est(&["--io", "pread", "--max-sectors-kb", "128"]);
    let (_, b1280) = est(&["--io", "pread"]);
    assert!(b128 < b1280);
    assert!(t128 > 0.0);
    let (d128, db128) = est(&["--io", "direct", "--max-sectors-kb", "128"]);
    let (d1280, db1280) = est(&["--io", "direct"]);
    assert_eq!(db128, db1280);
    assert!(d128 != d1280);
}

#[test]
fn bad_drive_curves_in_a_profile_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let base = "name='x'\n[ram]\nsize_gib=64\nbandwidth_gbs=60\n[ssd]\nbandwidth_gbs=7\n";
    for (extra, needle) in [
        (
            "points=[{block_kib=256, queue_depth=0, gbs=1.0}]\n",
            "queue_depth must be at least 1",
        ),
        (
            "points=[{block_kib=256, queue_depth=1, gbs=-1.0}]\n",
            "gbs must be a positive number",
        ),
        (
            "points=[{block_kib=256, queue_depth=1, mbs=1.0}]\n",
            "unknown field `mbs`",
        ),
        (
            "points=[{block_kib=256, queue_depth=1, gbs=1.46}]\n",
            "drive points are all at queue depth 1: give two depths or more",
        ),
        (
            "points=[]\n",
            "points lists no point: give measured points, or leave the field out",
        ),
        (
            "points=[{block_kib=256, queue_depth=1, gbs=1.0}, {block_kib=256, queue_depth=8, gbs=0.5}]\n",
            "a deeper queue is not slower",
        ),
        ("latency_us='fast'\n", "hw.toml:7: invalid type"),
        (
            "max_sectors_kb=0\n",
            "SSD max_sectors_kb must be at least 4",
        ),
        ("max_sectors_kb=-5\n", "hw.toml:7: invalid value"),
        // Figures in another unit: milliseconds, MB/s.
        (
            "latency_us=0.096\n",
            "SSD latency_us = 0.096 is less than any machine has (at least 0.5): the field is in microseconds",
        ),
        (
            "stream_gbs=2370\n",
            "SSD stream_gbs = 2370 is more than any machine has",
        ),
        (
            "points=[{block_kib=256, queue_depth=1, gbs=1060}, {block_kib=256, queue_depth=16, gbs=5220}]\n",
            "SSD drive point gbs = 1060 is more than any machine has (at most 200): the field is in GB/s (fio's MB/s / 1000)",
        ),
        (
            "points=[{block_kib=262144, queue_depth=1, gbs=1}, {block_kib=256, queue_depth=16, gbs=5}]\n",
            "SSD drive point block_kib = 262144 is more than any machine has",
        ),
        (
            "points=[{block_kib=256, queue_depth=1, gbs=2}, {block_kib=256, queue_depth=16, gbs=11}]\n",
            "hw.toml:7: SSD drive point gbs = 11 at 256 KiB, queue depth 16 is more than 1.5x the rated bandwidth_gbs = 7",
        ),
    ] {
        let p = dir.path().join("hw.toml");
        std::fs::write(&p, format!("{base}{extra}")).unwrap();
        let out = run(&[
            "simulate",
            "--cache-experts",
            "10",
            "-q",
            "--io",
            "mmap",
            "--hw",
            p.to_str().unwrap(),
        ]);
        refused(&out, needle);
        assert_eq!(
            String::from_utf8_lossy(&out.stderr)
                .trim_end()
                .lines()
                .count(),
            1,
            "one error line"
        );
    }
    // Measured points are used as given.
    let p = dir.path().join("ok.toml");
    std::fs::write(
        &p,
        format!("{base}points=[{{block_kib=256, queue_depth=1, gbs=0.5}}, {{block_kib=256, queue_depth=16, gbs=5.0}}]\n"),
    )
    .unwrap();
    let (h, r) = csv(&run(&[
        "simulate",
        "--cache-experts",
        "4000",
        "-q",
        "--format",
        "csv",
        "--io",
        "mmap",
        "--threads",
        "1",
        "--hw",
        p.to_str().unwrap(),
    ]));
    let col = |name: &str| {
        r[h.iter().position(|x| x == name).unwrap()]
            .parse::<f64>()
            .unwrap()
    };
    // One thread: 0.5 GB/s at 256 KiB for every byte the device reads, and the page
    // cache's CPU time for each.
    let t_ssd = col("t_ssd_ms") / 1e3;
    let bytes = col("device_bytes_per_token");
    let page_cache = bytes / (moe_spill::hardware::DEFAULT_PAGE_CACHE_GBS * 1e9);
    assert!(((bytes / 0.5e9 + page_cache) / t_ssd - 1.0).abs() < 1e-6);
}

#[test]
fn the_hardware_listing_is_a_profile_once_one_entry_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["hardware", "--format", "json"]);
    assert!(out.status.success());
    let all = dir.path().join("all.json");
    std::fs::write(&all, &out.stdout).unwrap();
    let r = run(&[
        "simulate",
        "--cache-experts",
        "10",
        "-q",
        "--hw",
        all.to_str().unwrap(),
    ]);
    refused(&r, "a list of 7 profiles: keep one");
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let one = dir.path().join("one.json");
    std::fs::write(&one, serde_json::to_string(&[&list[1]]).unwrap()).unwrap();
    let with_file = csv(&run(&[
        "simulate",
        "--cache-experts",
        "4000",
        "-q",
        "--format",
        "csv",
        "--hw",
        one.to_str().unwrap(),
    ]));
    let preset = csv(&run(&[
        "simulate",
        "--cache-experts",
        "4000",
        "-q",
        "--format",
        "csv",
        "--hw",
        "3090-ddr5",
    ]));
    assert_eq!(with_file, preset);
}

#[test]
fn ik_llama_cpp_kernels_multiply_faster() {
    let base = [
        "simulate",
        "--cache-experts",
        "100",
        "--quant",
        "q2_k",
        "--non-expert-quant",
        "q2_k",
        "--hw",
        "desktop-cpu",
        "-q",
    ];
    let with = |extra: &[&str]| {
        let mut v = base.to_vec();
        v.extend(extra);
        csv(&run(&v))
    };
    let col = |(h, r): &(Vec<String>, Vec<String>), name: &str| -> f64 {
        r[h.iter().position(|x| x == name).unwrap()]
            .parse()
            .unwrap()
    };
    let llama = with(&[]);
    let ik = with(&["--cpu-kernels", "ik_llama.cpp"]);
    // The same bytes, all of them q2_k: multiplied at 25.5 instead of 16.9 GB/s per
    // thread.
    assert_eq!(col(&llama, "ssd_bytes"), col(&ik, "ssd_bytes"));
    let ratio = col(&llama, "t_compute_ms") / col(&ik, "t_compute_ms");
    assert!((ratio - 25.5 / 16.9).abs() < 1e-6, "{ratio}");
    assert!(col(&ik, "est_tok_s") >= col(&llama, "est_tok_s"));
    refused(
        &run(&[&base[..], &["--cpu-kernels", "ik"]].concat()),
        "possible values: llama.cpp, ik_llama.cpp",
    );
}

#[test]
fn faults_and_buffered_reads_have_their_own_page_cache_rates() {
    let tok_s = |extra: &[&str]| {
        let mut v = vec!["simulate", "--policy", "lru", "--cache-experts", "4000"];
        v.extend(["--format", "csv", "-q"]);
        v.extend(extra);
        let (h, r) = csv(&run(&v));
        r[h.iter().position(|x| x == "est_tok_s").unwrap()]
            .parse::<f64>()
            .unwrap()
    };
    // Faults go at --fault-gbs, buffered reads at --page-cache-gbs; each leaves the other
    // engine alone, and a fault rate is the read rate unless given.
    let mmap = tok_s(&["--io", "mmap"]);
    assert!(tok_s(&["--io", "mmap", "--fault-gbs", "20"]) > mmap);
    assert_eq!(
        tok_s(&["--io", "mmap", "--page-cache-gbs", "1"]),
        tok_s(&["--io", "mmap", "--page-cache-gbs", "1", "--fault-gbs", "1"])
    );
    assert!(tok_s(&["--io", "mmap", "--page-cache-gbs", "1"]) < mmap);
    let pread = tok_s(&["--io", "pread"]);
    assert_eq!(tok_s(&["--io", "pread", "--fault-gbs", "20"]), pread);
    assert!(tok_s(&["--io", "pread", "--page-cache-gbs", "20"]) > pread);
    refused(&run(&["simulate", "--fault-gbs", "0"]), "RAM fault_gbs");
    // MADV_WILLNEED goes at --willneed-gbs, which faults under the other advice ignore;
    // without it, at the fault rate.
    let willneed = ["--io", "mmap", "--mmap-advice", "willneed"];
    let wn = tok_s(&willneed);
    assert!(tok_s(&[&willneed[..], &["--willneed-gbs", "1"]].concat()) < wn);
    assert!(tok_s(&[&willneed[..], &["--fault-gbs", "1"]].concat()) < wn);
    assert_eq!(
        tok_s(&[&willneed[..], &["--fault-gbs", "1", "--willneed-gbs", "4"]].concat()),
        wn
    );
    assert_eq!(tok_s(&["--io", "mmap", "--willneed-gbs", "1"]), mmap);
    assert_eq!(tok_s(&["--io", "pread", "--willneed-gbs", "1"]), pread);
    refused(
        &run(&["simulate", "--willneed-gbs", "0.1"]),
        "RAM willneed_gbs = 0.1 is less",
    );
}

/// scripts/fault_cost.py measures the CPU a fault costs per GB on a file on disk, from a
/// cold start it makes itself; bad input is one line and exit 2.
#[test]
fn the_fault_cost_script_measures_a_cost() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("scripts/fault_cost.py");
    let file = root
        .join("target")
        .join(format!("fault-cost-{}.dat", std::process::id()));
    let mut data = vec![0u8; 64 << 20];
    for (i, b) in data.iter_mut().enumerate() {
        *b = (i.wrapping_mul(2654435761) >> 13) as u8;
    }
    std::fs::write(&file, &data).unwrap();
    let out = Command::new("python3")
        .arg(&script)
        .arg(&file)
        .args(["--gb", "0.05", "--region", "262144"])
        .output()
        .unwrap();
    std::fs::remove_file(&file).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let cost: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(cost > 0.0 && cost < 10.0, "{cost} {err}");
    assert!(err.contains("major") && err.contains("GB read"), "{err}");
    // A missing file, and argparse's usage errors: one line, exit 2.
    let missing = root.join("no-such-file.dat");
    let missing = missing.to_str().unwrap();
    for (args, want) in [
        (&[missing][..], "no-such-file.dat: No such file"),
        (&["x.dat", "--gb", "abc"], "--gb: invalid float value"),
        (&["x.dat", "--gbb", "1"], "unrecognized arguments: --gbb"),
        (&["x.dat", "--gb", "1e300"], "--gb 1e+300: must be"),
        (&["/dev/null"], "/dev/null: not a regular file"),
        (&[], "required: FILE"),
    ] {
        let bad = Command::new("python3")
            .arg(&script)
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&bad.stderr);
        assert_eq!(bad.status.code(), Some(2), "{args:?} {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?} {err}");
        assert!(
            err.starts_with("fault_cost.py: ") && err.contains(want),
            "{args:?} {err}"
        );
    }
    // A FIFO is refused before it is opened (opening one for reading would block until a
    // writer came); a deadline turns a hang into a failure.
    let fifo = root
        .join("target")
        .join(format!("fault-cost-{}.fifo", std::process::id()));
    let _ = std::fs::remove_file(&fifo);
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let mut child = Command::new("python3")
        .arg(&script)
        .arg(&fifo)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > std::time::Duration::from_secs(60) {
            child.kill().unwrap();
            child.wait().unwrap();
            std::fs::remove_file(&fifo).unwrap();
            panic!("fault_cost.py hung on a FIFO");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let bad = child.wait_with_output().unwrap();
    std::fs::remove_file(&fifo).unwrap();
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains(".fifo: not a regular file"), "{err}");
    let help = Command::new("python3")
        .arg(&script)
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--advice") && help.contains("fault_gbs"),
        "{help}"
    );
}

/// A profile file `NAME.toml` in `dir`: a machine without a GPU whose `[ssd]` holds
/// `ssd` besides its bandwidth.
fn profile(dir: &std::path::Path, name: &str, ssd: &str) -> String {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!("name = \"{name}\"\n[ram]\nsize_gib = 64\nbandwidth_gbs = 60\nreserve_gib = 4\n[ssd]\nbandwidth_gbs = 7\n{ssd}\n"),
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

/// A machine flag the run's time leaves out gets a note, and the note is true: the rows
/// are the same without the flag.
#[test]
fn machine_flags_a_run_leaves_out_are_noted() {
    let base = ["simulate", "--cache-experts", "3000", "--format", "csv"];
    let out = |extra: &[&str]| {
        let mut v = base.to_vec();
        v.extend(extra);
        let o = run(&v);
        assert!(
            o.status.success(),
            "{v:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let (h, r) = csv(&o);
        (h, r, String::from_utf8(o.stderr).unwrap())
    };
    for (engine, unused) in [
        (
            &["--io", "rated"][..],
            &[
                "--ssd-latency-us=50",
                "--ssd-stream-gbs=9",
                "--max-sectors-kb=64",
                "--ssd-kiops=100",
                "--page-cache-gbs=1",
                "--fault-gbs=1",
                "--willneed-gbs=1",
                "--threads=2",
                "--cpu-kernels=ik_llama.cpp",
            ][..],
        ),
        (
            &["--io", "direct"],
            &["--page-cache-gbs=1", "--fault-gbs=1", "--willneed-gbs=1"],
        ),
        (&["--io", "pread"], &["--fault-gbs=1", "--willneed-gbs=1"]),
        (&["--io", "mmap"], &["--willneed-gbs=1"]),
        // A figure given makes its fallbacks unused: willneed falls back on fault, fault
        // on the page cache's.
        (
            &[
                "--io",
                "mmap",
                "--mmap-advice",
                "willneed",
                "--willneed-gbs=2",
            ],
            &["--page-cache-gbs=1", "--fault-gbs=1"],
        ),
        (
            &["--io", "mmap", "--mmap-advice", "willneed", "--fault-gbs=2"],
            &["--page-cache-gbs=1"],
        ),
        (&["--io", "mmap", "--fault-gbs=2"], &["--page-cache-gbs=1"]),
    ] {
        let (head, plain, _) = out(engine);
        for flag in unused {
            let mut with = engine.to_vec();
            with.push(flag);
            let (h, row, err) = out(&with);
            assert_eq!(h, head);
            let name = flag.split('=').next().unwrap();
            // Every figure is the same; the machine's label names the flag.
            for (i, col) in head.iter().enumerate() {
                if col == "hw" {
                    // The flag joins the label (the overrides in the profile's order).
                    let flag = flag.replace('=', " ");
                    assert!(row[i].contains(&flag) && !plain[i].contains(&flag));
                    assert_eq!(row[i].replace(&format!(" {flag}"), ""), plain[i]);
                } else {
                    assert_eq!(row[i], plain[i], "{with:?} changed {col}");
                }
            }
            assert!(
                err.contains(&format!("note: {name} does not enter this run's time")),
                "{with:?}: {err}"
            );
        }
    }
    // The flags an engine uses get no note.
    let (_, _, err) = out(&["--io", "pread", "--page-cache-gbs=1", "--max-sectors-kb=64"]);
    assert!(!err.contains("does not enter"), "{err}");
    // estimate's analytic sum takes none of the I/O model's figures.
    let o = run(&[
        "estimate",
        "--threads",
        "4",
        "--max-sectors-kb",
        "64",
        "--format",
        "csv",
    ]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains(
        "note: --max-sectors-kb, --threads do not enter this run's time: the analytic estimate"
    ));
    // A profile's measured points leave the latency and single-request rate nothing to do.
    let dir = tempfile::tempdir().unwrap();
    let hw = &profile(
        dir.path(),
        "fio",
        "points = [ { block_kib = 256, queue_depth = 1, gbs = 1.0 }, { block_kib = 256, queue_depth = 8, gbs = 5.0 } ]",
    );
    for (flag, value, why) in [
        (
            "--ssd-latency-us",
            "50",
            "--ssd-latency-us would change nothing: the drive points of `fio` replace",
        ),
        (
            "--ssd-kiops",
            "1",
            "--ssd-kiops would change nothing: the drive points of `fio` replace the latency, the single-request rate and the IOPS ceiling",
        ),
    ] {
        refused(
            &run(&[
                "simulate",
                "--cache-experts",
                "10",
                "--hw",
                hw,
                flag,
                value,
                "-q",
            ]),
            why,
        );
    }
}

/// `--ssd NAME` is the preset's rated read and largest request, nothing else: the same
/// run as the two flags it stands for, which override it in turn.
#[test]
fn a_drive_preset_is_its_rated_read_and_largest_request() {
    let base = [
        "simulate",
        "--policy",
        "lru",
        "--cache-experts",
        "3000",
        "--io",
        "pread",
        "--format",
        "csv",
        "-q",
    ];
    let est = |extra: &[&str]| {
        let mut v = base.to_vec();
        v.extend(extra);
        let (h, r) = csv(&run(&v));
        let i = h.iter().position(|c| c == "est_tok_s").unwrap();
        r[i].parse::<f64>().unwrap()
    };
    let preset = est(&["--ssd", "990-evo-plus"]);
    assert_eq!(
        preset,
        est(&["--ssd-bw", "7.25", "--max-sectors-kb", "512"])
    );
    assert_ne!(
        preset,
        est(&["--ssd-bw", "7.25"]),
        "the MDTS matters to pread"
    );
    assert_eq!(
        est(&["--ssd", "990-evo-plus", "--ssd-bw", "14"]),
        est(&["--ssd-bw", "14", "--max-sectors-kb", "512"])
    );
    // A preset keeps the machine's RAID0 count (four drives here), and the flags after
    // it override its curve; the name takes any case.
    assert_eq!(
        est(&[
            "--hw",
            "3090-ddr5-raid0",
            "--ssd",
            "T700",
            "--ssd-latency-us",
            "50"
        ]),
        est(&[
            "--hw",
            "3090-ddr5-raid0",
            "--ssd-bw",
            "12.4",
            "--max-sectors-kb",
            "512",
            "--ssd-latency-us",
            "50",
        ])
    );
    refused(
        &run(&["simulate", "--cache-experts", "10", "--ssd", "t70", "-q"]),
        "unknown drive `t70`: not a preset (970-evo-plus, p3,",
    );
    // A profile's own drive curve is not dropped in silence.
    let dir = tempfile::tempdir().unwrap();
    let hw = &profile(dir.path(), "box", "latency_us = 60");
    refused(
        &run(&[
            "simulate",
            "--cache-experts",
            "10",
            "--hw",
            hw,
            "--ssd",
            "p3",
            "-q",
        ]),
        "--ssd p3 would replace the drive curve of `box` (latency_us in its [ssd])",
    );
    // The listing, for programs.
    let out = run(&["hardware", "--drives", "--format", "csv"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("drive,ssd_gbs,kiops,mdts_kib,max_sectors_kb,description\n"));
    assert!(text.contains("\n990-pro,7.45,1400,2048,1280,"), "{text}");
    assert!(text.contains("\nsn850x,7.3,1200,,1280,"), "{text}");
    assert!(text.contains("\np3,3.5,,256,256,"), "{text}");
    // JSON names the figures as a profile's [ssd] does.
    let out = run(&["hardware", "--drives", "--format", "json"]);
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let t700 = all
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["model"] == "t700")
        .unwrap();
    assert_eq!(t700["bandwidth_gbs"], 12.4);
    assert_eq!(t700["max_sectors_kb"], 512);
}
