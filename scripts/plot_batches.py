#!/usr/bin/env python3
"""Plot the time of batches from `moe-spill sweep` CSVs (docs/batches.md).

    python3 scripts/plot_batches.py PREFILL.csv PARALLEL.csv -o batches.png

PREFILL.csv: sweeps with --phase all --prompt-tokens L1,L2,... at one or more --ubatch
sizes (rows concatenated): prefill tokens/s against prompt length, a colour per RAM
budget and a line style per ubatch. PARALLEL.csv: sweeps at several --parallel values:
decode tokens/s of all sequences together (solid) and of one sequence (dashed) against
--parallel, a colour per RAM budget. scripts/batch_figure.sh makes both CSVs and the
figure. Needs matplotlib (scripts/requirements.txt).
"""
import argparse
import csv
import math
import os
import sys
from collections import defaultdict


def fail(msg):
    print(f"plot_batches.py: {msg}", file=sys.stderr)
    sys.exit(2)


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit 2, like fail()."""

    def error(self, message):
        fail(" ".join(message.split()) + " (see --help)")


# How the columns read are parsed: ubatch and parallel as integers, ram_gib as a number
# (a colour each), the others as numbers or empty (no point).
INTS = {"ubatch", "parallel"}
REQUIRED_NUMBERS = {"ram_gib"}


def read(path, need):
    rows, lines = [], []
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            for r in reader:
                rows.append(r)
                lines.append(reader.line_num)
    except OSError as e:
        fail(f"{path}: {e.strerror or e}")
    except (UnicodeDecodeError, csv.Error) as e:
        fail(f"{path}: not a sweep CSV ({e})")
    if not rows:
        fail(f"{path}: no rows")
    missing = [c for c in need if c not in rows[0]]
    if missing:
        fail(f"{path}: missing columns {', '.join(missing)} (a sweep with the I/O model and batches?)")
    header = len(rows[0])
    for line, r in zip(lines, rows):
        if None in r or None in r.values():
            fields = header + len(r[None]) if None in r else sum(v is not None for v in r.values())
            fail(f"{path}: line {line}: {fields} fields, the header has {header}")
        for c in need:
            v = r[c]
            try:
                if c in INTS:
                    int(v)
                elif c in REQUIRED_NUMBERS:
                    if math.isnan(float(v)):
                        raise ValueError
                elif c != "policy":
                    num(v)
            except ValueError:
                what = "an integer" if c in INTS else "a number"
                fail(f"{path}: line {line}: {c} is {v!r}, not {what}")
    return rows


def num(v):
    return float(v) if v not in ("", None) else math.nan


def title(rows):
    r = rows[0]
    return f"{r.get('model', '')} {r.get('quant', '')} on {r.get('hw', '')}, policy {r['policy']}"


def main():
    ap = Parser(prog="plot_batches.py", description=__doc__.splitlines()[0])
    ap.add_argument("prefill", help="sweep CSV with prompt_len rows")
    ap.add_argument("parallel", help="sweep CSV at several --parallel values")
    ap.add_argument("-o", "--output", required=True, help="figure file (.png, .svg, .pdf)")
    a = ap.parse_args()
    ext = os.path.splitext(a.output)[1].lower()
    if ext not in (".png", ".svg", ".pdf"):
        fail(f"{a.output}: the figure's name must end in .png, .svg or .pdf")
    out_dir = os.path.dirname(os.path.abspath(a.output))
    if not os.path.isdir(out_dir):
        fail(f"{a.output}: no directory {out_dir}")
    if os.path.isdir(a.output):
        fail(f"{a.output}: is a directory")
    pre = read(a.prefill, ["ram_gib", "ubatch", "prompt_len", "prefill_tok_s", "policy"])
    par = read(a.parallel, ["ram_gib", "parallel", "decode_tok_s", "decode_tok_s_per_seq", "policy"])
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        fail("needs matplotlib (pip install -r scripts/requirements.txt)")

    rams = sorted({num(r["ram_gib"]) for r in pre + par})
    colour = {ram: plt.cm.viridis(i / max(1, len(rams) - 1)) for i, ram in enumerate(rams)}
    styles = ["-", "--", ":", "-."]
    ubatches = sorted({int(r["ubatch"]) for r in pre})
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))

    lines = defaultdict(list)
    for r in pre:
        lines[(num(r["ram_gib"]), int(r["ubatch"]))].append((num(r["prompt_len"]), num(r["prefill_tok_s"])))
    for (ram, ub), pts in sorted(lines.items()):
        pts.sort()
        style = styles[ubatches.index(ub) % len(styles)]
        ax1.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o", color=colour[ram],
                 label=f"{ram:g} GiB, -ub {ub}")
    ax1.set_xscale("log", base=2)
    ax1.set_yscale("log")
    ax1.set_xlabel("prompt length (tokens)")
    ax1.set_ylabel("prefill tokens/s")
    ax1.set_title("prompt processing: " + title(pre), fontsize=9)
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend(fontsize=7, ncol=2)

    agg, one = defaultdict(list), defaultdict(list)
    for r in par:
        ram, p = num(r["ram_gib"]), int(r["parallel"])
        agg[ram].append((p, num(r["decode_tok_s"])))
        one[ram].append((p, num(r["decode_tok_s_per_seq"])))
    for ram in sorted(agg):
        for series, style, what in ((agg, "-", "all"), (one, "--", "each")):
            pts = sorted(series[ram])
            ax2.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o", color=colour[ram],
                     label=f"{ram:g} GiB, {what}")
    ax2.set_xscale("log", base=2)
    ax2.set_xlabel("sequences decoding in parallel (--parallel)")
    ax2.set_ylabel("decode tokens/s")
    ax2.set_title("parallel decode: " + title(par), fontsize=9)
    ax2.grid(True, which="both", alpha=0.3)
    ax2.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    # Written beside the output and renamed: no half-written figure.
    tmp = os.path.join(os.path.dirname(a.output) or ".", "." + os.path.basename(a.output) + ".tmp" + ext)
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, a.output)
    except (OSError, ValueError) as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        fail(f"{a.output}: {getattr(e, 'strerror', None) or e}")


if __name__ == "__main__":
    main()
