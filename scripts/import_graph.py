#!/usr/bin/env python3
"""The import graph of src/: which top-level module uses which, read from the
`crate::` paths of each file (`use crate::x` lines and inline `crate::x::` paths). Fails
(exit 1) on a cycle between modules, or on clap used outside src/cli/ and src/main.rs.

    python3 scripts/import_graph.py [--dot]

Prints the modules in dependency order (each after everything it uses), one a line
with what it uses; --dot prints a Graphviz graph instead.
"""

import re
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
CRATE_PATH = re.compile(r"\bcrate::(\w+)")
USE_GROUP = re.compile(r"\buse\s+crate::\{([^}]*)\}", re.S)


def module_of(path: Path) -> str:
    """src/a.rs and src/a/**.rs belong to module `a`; main.rs is `main`."""
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".rs")


def strip_comments(text: str) -> str:
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())


def graph() -> tuple[dict[str, set[str]], list[str]]:
    edges: dict[str, set[str]] = {}
    clap_outside: list[str] = []
    # Only modules count: `crate::note!` is a macro, not a dependency.
    known = {module_of(p) for p in SRC.rglob("*.rs")}
    for path in sorted(SRC.rglob("*.rs")):
        mod = module_of(path)
        if mod == "lib":
            continue
        text = strip_comments(path.read_text())
        used = set(CRATE_PATH.findall(text))
        for group in USE_GROUP.findall(text):
            used.update(re.findall(r"(?:^|,)\s*(\w+)", group))
        if mod == "main":
            used.update(re.findall(r"\bmoe_spill::(\w+)", text))
        edges.setdefault(mod, set()).update(
            u for u in used if u in known and u not in (mod, "self")
        )
        inside_cli = mod in ("cli", "main")
        if not inside_cli and re.search(r"\bclap::|\buse clap\b", text):
            clap_outside.append(str(path.relative_to(SRC.parent)))
    for targets in list(edges.values()):
        for t in targets:
            edges.setdefault(t, set())
    return edges, clap_outside


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(edges[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(edges):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def order(edges: dict[str, set[str]]) -> list[str]:
    """Modules with everything they use first (the graph has no cycle)."""
    done: list[str] = []
    left = dict(edges)
    while left:
        ready = sorted(m for m, uses in left.items() if uses <= set(done))
        done.extend(ready)
        for m in ready:
            del left[m]
    return done


def main() -> int:
    edges, clap_outside = graph()
    cycle = find_cycle(edges)
    if "--dot" in sys.argv:
        print("digraph imports {")
        for m in sorted(edges):
            for n in sorted(edges[m]):
                print(f'  "{m}" -> "{n}";')
        print("}")
    elif cycle is None:
        for m in order(edges):
            print(f"{m:>10} -> {', '.join(sorted(edges[m])) or '-'}")
    failed = False
    if cycle:
        print("import cycle: " + " -> ".join(cycle), file=sys.stderr)
        failed = True
    if clap_outside:
        print("clap outside src/cli/: " + ", ".join(clap_outside), file=sys.stderr)
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
