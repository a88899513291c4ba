"""Copies the converged study's tables from its report into docs/results.md.

    python docs/study_tables.py work/study/report.md            # rewrite docs/results.md's study tables
    python docs/study_tables.py work/study/report.md --check    # exit 1 when a table there differs

`benchmarks/study.py ... --report` writes WORK/report.md. Each table of the doc's converged-study section (from its
"## The converged study" heading to the next "## ") whose header row is the header row of exactly one table of the
report is replaced by that table, in the doc's indentation; the prose around the tables is the doc's own and stays.
A header the report holds twice (the two families' tuning tables) or not at all is left as it is, and said so.
"""

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PAGE = os.path.join(HERE, "results.md")
SECTION = "## The converged study"


def tables(lines: list[str], start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """(first, past-last) line of every markdown table in lines[start:end], indented or not."""
    end = len(lines) if end is None else end
    found, i = [], start
    while i < end:
        if lines[i].lstrip().startswith("|"):
            j = i
            while j < end and lines[j].lstrip().startswith("|"):
                j += 1
            found.append((i, j))
            i = j
        else:
            i += 1
    return found


def section(lines: list[str]) -> tuple[int, int]:
    """The converged-study section's line range in the doc."""
    starts = [i for i, line in enumerate(lines) if line.strip() == SECTION]
    if len(starts) != 1:
        raise SystemExit(f"study_tables: the doc has {len(starts)} '{SECTION}' headings; expected exactly one")
    end = next((i for i in range(starts[0] + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return starts[0], end


def update(doc: str, report: str) -> tuple[str, list[str]]:
    """The doc with its study tables taken from the report, and a line per table saying what happened to it."""
    d, r = doc.split("\n"), report.split("\n")
    by_header: dict[str, list[list[str]]] = {}
    for i, j in tables(r):
        by_header.setdefault(r[i].strip(), []).append([line.strip() for line in r[i:j]])
    said, edits = [], []
    for i, j in tables(d, *section(d)):
        header = d[i].strip()
        found = by_header.get(header, [])
        if len(found) != 1:
            said.append(f"line {i + 1}: {header[:60]}: left as it is ({len(found)} such tables in the report)")
            continue
        indent = d[i][: len(d[i]) - len(d[i].lstrip())]
        new = [indent + line for line in found[0]]
        said.append(f"line {i + 1}: {header[:60]}: {'unchanged' if new == d[i:j] else f'{j - i} -> {len(new)} lines'}")
        edits.append((i, j, new))
    for i, j, new in reversed(edits):
        d[i:j] = new
    return "\n".join(d), said


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("report", help="the study's report.md (benchmarks/study.py ... --report writes WORK/report.md)")
    p.add_argument("--doc", default=PAGE, help="the page to update (default: docs/results.md)")
    p.add_argument("--check", action="store_true", help="exit 1 when a table differs; write nothing")
    a = p.parse_args(argv)
    for path in (a.report, a.doc):
        if not os.path.isfile(path):
            print(f"study_tables: {path} does not exist", file=sys.stderr)
            return 2
    with open(a.doc, encoding="utf-8") as f:
        old = f.read()
    with open(a.report, encoding="utf-8") as f:
        new, said = update(old, f.read())
    for line in said:
        print(f"{a.doc}: {line}")
    if a.check:
        return int(new != old)
    if new != old:
        from one_layer_lottery.io import write_text  # atomic: a failed write leaves the page as it was

        write_text(a.doc, new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
