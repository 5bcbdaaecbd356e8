#!/usr/bin/env python3
"""Render every figure of scripts/plot_sweep.py from the small committed sweep CSV and
check the files. Run by scripts/test.sh; the last line is `plots: N passed, M failed`.

tests/data/sweep_small.csv was made by
    moe-spill sweep traces/synth-sample --hw desktop-cpu --ram 6GiB..10GiB --points 9 \
        --per-layer --policies lru,clock,arc,linux,pinned:2,opt -q -o tests/data/sweep_small.csv
"""
import csv
import os
import struct
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSV = os.path.join(ROOT, "tests", "data", "sweep_small.csv")
PLOT = os.path.join(ROOT, "scripts", "plot_sweep.py")
# docs/batches.png's CSVs, made by scripts/batch_figure.sh.
BATCHES = os.path.join(ROOT, "scripts", "plot_batches.py")
PREFILL = os.path.join(ROOT, "docs", "batches_prefill.csv")
PARALLEL = os.path.join(ROOT, "docs", "batches_parallel.csv")


def plot(*args, script=PLOT):
    return subprocess.run([sys.executable, script, *args], capture_output=True, text=True)


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert head[12:16] == b"IHDR", "no IHDR chunk"
    return struct.unpack(">II", head[16:24])


def main():
    passed, failed = 0, 0

    def check(name, fn):
        nonlocal passed, failed
        try:
            fn()
            passed += 1
            print(f"ok   {name}")
        except AssertionError as e:
            failed += 1
            print(f"FAIL {name}: {e}")

    with tempfile.TemporaryDirectory() as d:
        for panel in ["all", "ssd", "toks", "heatmap"]:
            for ext in [".png", ".svg"]:
                out = os.path.join(d, f"{panel}{ext}")

                def render(panel=panel, ext=ext, out=out):
                    r = plot(CSV, "-o", out, "--panel", panel)
                    assert r.returncode == 0, r.stderr.strip()
                    assert os.path.getsize(out) > 5000, f"{out} is only {os.path.getsize(out)} bytes"
                    if ext == ".png":
                        w, h = png_size(out)
                        want_w = 3 if panel == "all" else 1
                        assert w >= 600 * want_w and h >= 400, f"{w}x{h}"
                    else:
                        root = ET.parse(out).getroot()
                        assert root.tag.endswith("svg"), root.tag
                        text = open(out).read()
                        # titles name trace, model and machine
                        assert "olmoe-1b-7b" in text and "desktop-cpu" in text, "title labels missing"

                check(f"{panel}{ext}", render)

        def heatmap_other_policy():
            out = os.path.join(d, "clock.png")
            r = plot(CSV, "-o", out, "--panel", "heatmap", "--policy", "clock")
            assert r.returncode == 0, r.stderr.strip()
            png_size(out)

        check("heatmap --policy clock", heatmap_other_policy)

        def toks_names_time_model():
            # the tokens/s panel says which time model made est_tok_s: the CSV's `io`
            # column (the I/O model, the default), or none of it (`--io rated`)
            out = os.path.join(d, "toks_io.svg")
            r = plot(CSV, "-o", out, "--panel", "toks")
            assert r.returncode == 0, r.stderr.strip()
            assert "I/O model (mmap)" in open(out).read(), "time model missing from the title"
            rated = os.path.join(d, "rated.csv")
            drop = {"io", "device_bytes_per_token", "t_compute_ms"}
            with open(CSV, newline="") as f:
                rows = list(csv.DictReader(f))
            with open(rated, "w", newline="") as f:
                w = csv.DictWriter(f, [c for c in rows[0] if c not in drop])
                w.writeheader()
                for row in rows:
                    w.writerow({k: v for k, v in row.items() if k not in drop})
            out = os.path.join(d, "toks_rated.svg")
            r = plot(rated, "-o", out, "--panel", "toks")
            assert r.returncode == 0, r.stderr.strip()
            assert "rated SSD bandwidth" in open(out).read(), "rated model not named"

        check("toks names the time model", toks_names_time_model)

        def toks_plots_decode_rate_of_batches():
            # With batch columns est_tok_s counts prompt tokens too: the panel plots
            # decode_tok_s and says so; without them, est_tok_s.
            batches = os.path.join(ROOT, "docs", "batches_parallel.csv")
            out = os.path.join(d, "toks_batches.svg")
            r = plot(batches, "-o", out, "--panel", "toks")
            assert r.returncode == 0, r.stderr.strip()
            assert "(decode_tok_s)" in open(out).read(), "decode_tok_s not named"
            out = os.path.join(d, "toks_plain.svg")
            r = plot(CSV, "-o", out, "--panel", "toks")
            assert r.returncode == 0, r.stderr.strip()
            assert "(est_tok_s)" in open(out).read(), "est_tok_s not named"

        check("toks plots the decode rate of batch rows", toks_plots_decode_rate_of_batches)

        def bad_inputs():
            bad = os.path.join(d, "bad.csv")
            with open(bad, "w") as f:
                f.write("a,b\n1,2\n")
            r = plot(bad, "-o", os.path.join(d, "x.png"))
            assert r.returncode == 2 and "not a moe-spill sweep CSV" in r.stderr, r.stderr
            assert not os.path.exists(os.path.join(d, "x.png")), "partial output"
            r = plot(CSV, "-o", os.path.join(d, "x.gif"))
            assert r.returncode == 2, r.stderr
            r = plot(CSV, "-o", os.path.join(d, "y.png"), "--panel", "heatmap", "--policy", "nope")
            assert r.returncode == 2 and "not in the CSV" in r.stderr, r.stderr
            leftovers = [f for f in os.listdir(d) if f.endswith(".tmp.png") or f.startswith(".")]
            assert not leftovers, leftovers

        check("bad inputs", bad_inputs)

        def one_line_errors():
            # usage errors and an -o in no directory: one line naming the problem, exit
            # 2, no traceback, nothing written
            cases = [
                ([CSV, "-o", os.path.join(d, "no-dir", "z.png")], "no-dir"),
                ([CSV], "required: -o/--output"),
                ([], "required: csv"),
                ([CSV, "-o", os.path.join(d, "z.png"), "--bogus"], "unrecognized arguments: --bogus"),
            ]
            for args, want in cases:
                r = plot(*args)
                lines = r.stderr.strip().splitlines()
                assert r.returncode == 2, (args, r.returncode, r.stderr)
                assert len(lines) == 1 and lines[0].startswith("plot_sweep.py: "), (args, r.stderr)
                assert want in r.stderr, (args, r.stderr)
            assert not os.path.exists(os.path.join(d, "no-dir")), "made the directory"
            assert not os.path.exists(os.path.join(d, "z.png")), "partial output"

        check("one-line errors", one_line_errors)

        def batches_figure():
            for ext in [".png", ".svg"]:
                out = os.path.join(d, "batches" + ext)
                r = plot(PREFILL, PARALLEL, "-o", out, script=BATCHES)
                assert r.returncode == 0, r.stderr.strip()
                if ext == ".png":
                    w, h = png_size(out)
                    assert w >= 1200 and h >= 400, f"{w}x{h}"
                else:
                    text = open(out).read()
                    assert "glm-5" in text and "4090-ddr5" in text, "title labels missing"
                    assert "-ub 2048" in text and "prompt length" in text, "legend or axis missing"

        check("batches figure", batches_figure)

        def batches_bad_inputs():
            # a sweep CSV without batch timing columns, and a figure type it cannot write
            out = os.path.join(d, "b.png")
            r = plot(CSV, PARALLEL, "-o", out, script=BATCHES)
            assert r.returncode == 2 and "missing columns" in r.stderr, r.stderr
            assert not os.path.exists(out), "partial output"
            r = plot(PREFILL, PARALLEL, "-o", os.path.join(d, "b.gif"), script=BATCHES)
            assert r.returncode == 2 and ".png, .svg or .pdf" in r.stderr, r.stderr

        check("batches bad inputs", batches_bad_inputs)

        def batches_one_line_errors():
            for args, want in [
                ([PREFILL, PARALLEL, "-o", os.path.join(d, "no-dir", "b.png")], "no-dir"),
                ([PREFILL], "required: parallel"),
            ]:
                r = plot(*args, script=BATCHES)
                lines = r.stderr.strip().splitlines()
                assert r.returncode == 2, (args, r.returncode, r.stderr)
                assert len(lines) == 1 and lines[0].startswith("plot_batches.py: "), (args, r.stderr)
                assert want in r.stderr, (args, r.stderr)

        check("batches one-line errors", batches_one_line_errors)
    print(f"plots: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
