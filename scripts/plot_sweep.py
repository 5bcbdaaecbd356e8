#!/usr/bin/env python3
"""Plot a `moe-spill sweep` CSV.

    moe-spill sweep TRACE --per-layer -o sweep.csv
    python3 scripts/plot_sweep.py sweep.csv -o sweep.png            # all panels in one figure
    python3 scripts/plot_sweep.py sweep.csv -o ssd.svg --panel ssd  # one panel; .svg/.pdf by name

Panels:
  ssd      SSD MiB per token against RAM, one line per policy, the seed's analytic D+S dashed
  toks     estimated tokens/s against RAM, analytic dashed; the title names the time model
           (the `io` column: "I/O model (mmap)", or "rated SSD bandwidth" for `--io rated`)
  heatmap  per-layer miss rate, layer x budget (needs `sweep --per-layer`), for --policy
Axes are in GiB (installed RAM; cache experts when the sweep had no model), MiB/token and
tok/s; titles name the trace, model, quant and machine taken from the CSV.
Needs matplotlib (scripts/requirements.txt).
"""
import argparse
import csv
import math
import os
import sys
from collections import OrderedDict

MIB = 1 << 20


def fail(msg):
    print(f"plot_sweep.py: {msg}", file=sys.stderr)
    sys.exit(2)


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit 2, like fail()."""

    def error(self, message):
        fail(" ".join(message.split()) + " (see --help)")


# Columns read as numbers, when present (misses_layer_* too).
NUMERIC = ["cache_experts", "ram_gib", "accesses", "ssd_bytes_per_token", "analytic_ssd_bytes_per_token",
           "est_tok_s", "analytic_tok_s"]


def read_rows(path):
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
        fail(f"{path}: not a moe-spill sweep CSV ({e})")
    if not rows:
        fail(f"{path}: no rows")
    need = {"policy", "cache_experts", "misses", "tokens"}
    if any(c.startswith("misses_layer_") for c in rows[0]):
        need.add("accesses")  # the heatmap's denominator
    missing = need - set(rows[0])
    if missing:
        fail(f"{path}: not a moe-spill sweep CSV (missing columns {', '.join(sorted(missing))})")
    header = len(rows[0])
    cols = [c for c in rows[0] if c in NUMERIC or c.startswith("misses_layer_")]
    for line, r in zip(lines, rows):
        if None in r or None in r.values():
            fields = header + len(r[None]) if None in r else sum(v is not None for v in r.values())
            fail(f"{path}: line {line}: {fields} fields, the header has {header}")
        for c in cols:
            try:
                num(r[c])
            except ValueError:
                fail(f"{path}: line {line}: {c} is {r[c]!r}, not a number")
    return rows


def num(v):
    return float(v) if v not in ("", None) else math.nan


def x_axis(rows):
    if all(r.get("ram_gib", "") != "" for r in rows):
        return "ram_gib", "installed RAM (GiB)"
    return "cache_experts", "page-cache capacity (experts)"


def series(rows, xkey):
    """(policy, vram) -> sorted list of rows."""
    out = OrderedDict()
    for r in rows:
        key = (r["policy"], r.get("vram_gib", ""))
        out.setdefault(key, []).append(r)
    for k in out:
        out[k].sort(key=lambda r: num(r[xkey]))
    return out


def title_of(rows):
    r = rows[0]
    parts = [r.get("trace") or "trace"]
    if r.get("model"):
        parts.append(f"{r['model']} @ {r.get('quant', '')}")
    if r.get("hw"):
        parts.append(r["hw"])
    if r.get("partition") and r["partition"] != "global":
        parts.append(f"{r['partition']} caches")
    return " | ".join(parts)


def time_model(rows):
    """The time model of est_tok_s: the engine of the I/O model (`io` column), or the
    rated-bandwidth model when the column is absent or empty (`--io rated`)."""
    engines = sorted({r.get("io") or "" for r in rows})
    if engines == [""]:
        return "rated SSD bandwidth"
    names = ", ".join(e if e else "rated" for e in engines)
    return f"I/O model ({names})"


def label(policy, vram, multi_vram):
    return f"{policy} (VRAM {vram} GiB)" if multi_vram and vram != "" else policy


def panel_lines(ax, rows, ykey, analytic_key, ylabel, scale):
    xkey, xlabel = x_axis(rows)
    groups = series(rows, xkey)
    multi_vram = len({k[1] for k in groups}) > 1
    if all(r.get(ykey, "") == "" for r in rows):
        ax.text(0.5, 0.5, f"no {ykey} in this CSV\n(sweep without a model)", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel(xlabel)
        return
    analytic_done = set()
    for (policy, vram), rs in groups.items():
        xs = [num(r[xkey]) for r in rs]
        ys = [num(r[ykey]) / scale for r in rs]
        ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.5, label=label(policy, vram, multi_vram))
        if analytic_key in rs[0] and vram not in analytic_done and rs[0][analytic_key] != "":
            ya = [num(r[analytic_key]) / scale for r in rs]
            ax.plot(xs, ya, linestyle="--", color="black", linewidth=1.2,
                    label="analytic D+S (seed)" + (f", VRAM {vram} GiB" if multi_vram and vram else ""))
            analytic_done.add(vram)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)


def panel_heatmap(fig, ax, rows, policy):
    layer_cols = [c for c in rows[0] if c.startswith("misses_layer_")]
    if not layer_cols:
        ax.text(0.5, 0.5, "no per-layer data\n(run sweep with --per-layer)", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    rs = [r for r in rows if r["policy"] == policy]
    if not rs:
        fail(f"--policy {policy}: not in the CSV (policies: {', '.join(sorted({r['policy'] for r in rows}))})")
    vrams = sorted({r.get("vram_gib", "") for r in rs})
    rs = [r for r in rs if r.get("vram_gib", "") == vrams[0]]
    xkey, xlabel = x_axis(rs)
    rs.sort(key=lambda r: num(r[xkey]))
    layers = [int(c[len("misses_layer_"):]) for c in layer_cols]
    grid = []
    for c in layer_cols:
        line = []
        for r in rs:
            present = [x for x in layer_cols if r.get(x, "") != ""]
            per_layer_accesses = num(r["accesses"]) / max(1, len(present))
            v = r.get(c, "")
            line.append(num(v) / per_layer_accesses if v != "" else math.nan)
        grid.append(line)
    im = ax.imshow(grid, aspect="auto", origin="lower", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    step = max(1, len(rs) // 8)
    ax.set_xticks(range(0, len(rs), step))
    ax.set_xticklabels([f"{num(r[xkey]):.3g}" for r in rs][::step])
    lstep = max(1, len(layers) // 12)
    ax.set_yticks(range(0, len(layers), lstep))
    ax.set_yticklabels([str(l) for l in layers][::lstep])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("MoE layer")
    ax.set_title(f"per-layer miss rate, {policy}" + (f", VRAM {vrams[0]} GiB" if vrams[0] else ""), fontsize=10)
    fig.colorbar(im, ax=ax, label="misses / accesses")


def main():
    ap = Parser(prog="plot_sweep.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("csv", help="a moe-spill sweep CSV")
    ap.add_argument("-o", "--output", required=True, help="figure file (.png, .svg, .pdf)")
    ap.add_argument("--panel", choices=["all", "ssd", "toks", "heatmap"], default="all")
    ap.add_argument("--policy", default="lru", help="policy of the heatmap (default lru)")
    args = ap.parse_args()
    rows = read_rows(args.csv)
    ext = os.path.splitext(args.output)[1].lower()
    if ext not in (".png", ".svg", ".pdf"):
        fail(f"{args.output}: use a .png, .svg or .pdf name")
    out_dir = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(out_dir):
        fail(f"{args.output}: no directory {out_dir}")
    if os.path.isdir(args.output):
        fail(f"{args.output}: is a directory")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        fail("needs matplotlib (pip install -r scripts/requirements.txt)")

    panels = ["ssd", "toks", "heatmap"] if args.panel == "all" else [args.panel]
    if args.panel == "all" and not any(c.startswith("misses_layer_") for c in rows[0]):
        panels = ["ssd", "toks"]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels), 4.8), squeeze=False)
    for ax, p in zip(axes[0], panels):
        if p == "ssd":
            panel_lines(ax, rows, "ssd_bytes_per_token", "analytic_ssd_bytes_per_token", "SSD reads (MiB / token)", MIB)
            ax.set_title("SSD traffic per token", fontsize=10)
        elif p == "toks":
            # With batches (--phase all, --parallel) est_tok_s counts prompt tokens too;
            # decode_tok_s is the decode rate alone.
            key = "decode_tok_s" if any(r.get("decode_tok_s", "") != "" for r in rows) else "est_tok_s"
            panel_lines(ax, rows, key, "analytic_tok_s", "estimated decode tokens / s", 1.0)
            ax.set_title(f"estimated decode speed ({key}): {time_model(rows)}", fontsize=10)
        else:
            panel_heatmap(fig, ax, rows, args.policy)
    fig.suptitle(title_of(rows), fontsize=11)
    fig.tight_layout()
    tmp = os.path.join(out_dir, f".{os.path.basename(args.output)}.{os.getpid()}.tmp{ext}")
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, args.output)
    except OSError as e:
        fail(f"{args.output}: {e.strerror or e}")
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    print(f"plot_sweep.py: wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
