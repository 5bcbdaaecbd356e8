#!/usr/bin/env python3
"""The CPU time page faults cost the faulting thread, per GB brought in from a file.

Maps FILE, then touches every page of random regions of REGION bytes (as a matmul
touches an expert's slice) until GB gigabytes were touched, under llama.cpp's
advice (`sequential`: POSIX_FADV_SEQUENTIAL on the file; `willneed`: MADV_WILLNEED
on each region first; `normal`: none). Prints the system CPU seconds per GB the drive
read for it (/proc/self/io's read_bytes: the touched pages and the readahead around
them, the bytes the I/O model prices) on stdout, and a line with the wall rate and
the faults on stderr.

It drops the file's cached pages first (fsync, POSIX_FADV_DONTNEED; pages other
processes have mapped stay). Run it inside a memory cgroup smaller than the file when
reclaim should be counted, as scripts/local_check.sh does. The user time
of this loop is Python's, not the kernel's, and is not counted.

A profile's `fault_gbs` is 1 / (this cost - the system time per GB of O_DIRECT reads
of the same drive), as scripts/local_check.sh computes it.

Usage: fault_cost.py FILE [--region BYTES] [--gb GB] [--advice ADVICE] [--seed N]
"""
import argparse
import mmap
import os
import random
import resource
import stat
import sys
import time

PAGE = mmap.PAGESIZE
# The most --gb takes: a million GB touched is days of faulting, and its bytes fit an int.
MAX_GB = 1e6


def die(msg):
    print(f"fault_cost.py: {msg}", file=sys.stderr)
    sys.exit(2)


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit 2, like die()."""

    def error(self, message):
        die(" ".join(message.split()) + " (see --help)")


def read_bytes():
    """Bytes this process had read from storage so far."""
    try:
        with open("/proc/self/io") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("read_bytes:"))
    except (OSError, StopIteration, ValueError, IndexError):
        die("/proc/self/io: no read_bytes (a kernel without per-task I/O accounting?)")


def main():
    ap = Parser(
        prog="fault_cost.py",
        description=__doc__.split("\nUsage:")[0].strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit status: 0 with the figure on stdout, 2 on bad input or when the drive "
        "read nothing.",
    )
    ap.add_argument(
        "file",
        metavar="FILE",
        help="a file on the drive to measure, larger than the memory the process may use "
        "when reclaim should count",
    )
    ap.add_argument(
        "--region",
        type=int,
        default=1 << 20,
        metavar="BYTES",
        help=f"bytes per region touched, rounded down to pages of {PAGE} B; one expert's "
        "slice (default 1 MiB)",
    )
    ap.add_argument(
        "--gb",
        type=float,
        default=2.0,
        metavar="GB",
        help="GB (10^9 B) touched in all, at most %g; more gives a steadier figure "
        "(default %%(default)g)" % MAX_GB,
    )
    ap.add_argument(
        "--advice",
        choices=["sequential", "willneed", "normal"],
        default="sequential",
        help="llama.cpp's advice: POSIX_FADV_SEQUENTIAL on the file, MADV_WILLNEED on each "
        "region before touching it, or none (default %(default)s)",
    )
    ap.add_argument(
        "--seed",
        type=int,
        default=1,
        metavar="N",
        help="seed of the random region order (default %(default)s)",
    )
    a = ap.parse_args()
    if a.region < PAGE:
        die(f"--region {a.region}: must be at least {PAGE} (one page)")
    if not 0 < a.gb <= MAX_GB:
        die(f"--gb {a.gb:g}: must be a number of GB above 0 and at most {MAX_GB:g}")
    region = a.region // PAGE * PAGE
    # A FIFO, socket or device would block the open or the reads, or cannot be mapped:
    # only a regular file (after symlinks) is measured. O_NONBLOCK, and the fstat after
    # the open, cover a file swapped for a FIFO in between; on a regular file it changes
    # nothing.
    try:
        mode = os.stat(a.file).st_mode
    except (OSError, ValueError) as e:
        die(f"{a.file}: {getattr(e, 'strerror', None) or e}")
    if stat.S_ISDIR(mode):
        die(f"{a.file}: is a directory")
    if not stat.S_ISREG(mode):
        die(f"{a.file}: not a regular file")
    try:
        fd = os.open(a.file, os.O_RDONLY | os.O_NONBLOCK)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            die(f"{a.file}: not a regular file")
        size = st.st_size
        if size < 4 * region:
            die(f"{a.file}: {size} bytes, smaller than four regions")
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        if a.advice == "sequential":
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        m = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
    except OSError as e:
        die(f"{a.file}: {e.strerror or e}")
    rng = random.Random(a.seed)
    regions = size // region
    # At least one byte, so at least one region is touched (--gb under 1e-9 would touch
    # none); at most MAX_GB * 1e9, a finite float, so int() cannot overflow.
    total = max(1, int(a.gb * 1e9))
    before = resource.getrusage(resource.RUSAGE_SELF)
    read0 = read_bytes()
    t0 = time.monotonic()
    done = acc = 0
    while done < total:
        off = rng.randrange(regions) * region
        if a.advice == "willneed":
            m.madvise(mmap.MADV_WILLNEED, off, region)
        for p in range(off, off + region, PAGE):
            acc += m[p]
        done += region
    # At least a nanosecond: a coarse clock must not divide the rate by zero.
    wall = max(time.monotonic() - t0, 1e-9)
    after = resource.getrusage(resource.RUSAGE_SELF)
    gb = done / 1e9
    read_gb = (read_bytes() - read0) / 1e9
    if read_gb <= 0.01 * gb:
        die(f"{a.file}: the drive read nothing (a file in memory, or mapped by another process)")
    if read_gb < 0.5 * gb:
        print(
            f"fault_cost.py: warning: {read_gb:.2f} GB read for {gb:.2f} GB touched: most touches hit "
            "the cache (a file not much larger than --gb, or than the memory the process may use)",
            file=sys.stderr,
        )
    sys_s = after.ru_stime - before.ru_stime
    # The kernel splits a process's CPU time into user and system time by the clock ticks
    # it sampled in each, so system time is good to about one tick: under 20 ticks (0.2 s
    # at 100 Hz) the figure is off by 5 % or more. And the cost is a mean over randomly
    # placed regions (whose readahead may overlap): its spread falls as 1/sqrt(regions),
    # 25 % at 16, so fewer are too few. Either way the figure is printed, with a warning
    # saying what to raise.
    ticks = sys_s * os.sysconf("SC_CLK_TCK")
    touched = done // region
    small = []
    if ticks < 20:
        small.append(f"{sys_s * 1e3:.1f} ms of system CPU ({ticks:.1f} clock ticks, under 20)")
    if touched < 16:
        small.append(f"{touched} of the 16 regions it takes touched")
    if small:
        print(
            f"fault_cost.py: warning: a small sample, {' and '.join(small)}: the figure is "
            "rough; increase --gb",
            file=sys.stderr,
        )
    print(f"{sys_s / read_gb:.4f}")
    print(
        f"fault_cost.py: {a.advice}, {region} B regions: {gb:.2f} GB touched at {gb / wall:.2f} GB/s, "
        f"{read_gb:.2f} GB read, {sys_s / read_gb:.3f} s of system CPU per GB read, "
        f"{after.ru_majflt - before.ru_majflt} major and {after.ru_minflt - before.ru_minflt} minor faults",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
