"""The docs stay in step with the code (the generated reference) and with the study's ledger (the README's table)."""

import glob
import json
import os
import re
import subprocess
import sys

from conftest import ROOT


def test_options_page_is_current():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "docs", "options.py"), "--check"], capture_output=True,
                       text=True, check=False)
    assert r.returncode == 0, r.stderr


def test_readme_is_short_and_links_resolve():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    assert len(text.splitlines()) <= 150
    for target in re.findall(r"\]\(((?:docs|benchmarks|scripts|models|examples)/[^)#]+)", text):
        assert os.path.exists(os.path.join(ROOT, target)), target


def test_docs_pages_links_resolve():
    pages = sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
    assert len(pages) >= 10
    for page in pages:
        with open(page, encoding="utf-8") as f:
            text = f.read()
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if not target.startswith(("http://", "https://", "mailto:")):
                assert os.path.exists(os.path.join(os.path.dirname(page), target)), f"{page}: {target}"


def test_readme_example_translates_as_it_says():
    """The README's headline: the committed model, run as written, prints the sentence the README shows (a model
    published again without the README following fails here)."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = " ".join(f.read().split())
    path, source, shown = re.search(r'`one-layer-lottery translate (models/\S+\.olt) "([^"]+)"` prints `([^`]+)`',
                                    text).groups()
    r = subprocess.run([sys.executable, "-m", "one_layer_lottery.cli", "translate", path, source], cwd=ROOT,
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0 and r.stdout.strip() == shown, r.stdout + r.stderr[-2000:]


# the README's evidence table: each row's label and the ledger runs (without their "-sSEED") it reports
STUDY_ROWS = {
    "dense Transformer, tuned": ["dense-lr2e-3-d0.3"],
    "one-layer, masks only": ["mask-lr8e-3-d0-c0"],
    "one-layer on the dense model's embeddings, frozen": ["pretrained_frozen"],
    "the same, those embeddings masked": ["pretrained_masked"],
    "masks only, coats": ["coats"],
    "masks only at twice the width": ["masks_only_wide-lr2e-3"],
    "standard supermask": ["standard"],
    "dense at twice the width": ["dense_wide"],
    "dense at half / a quarter / an eighth": ["dense_half-d0.1", "dense_quarter-d0.1", "dense_eighth-d0.1"],
}


def test_readme_study_table_is_the_ledgers():
    """The README's converged-study table, copied by hand from the report, holds the ledger's figures: each row's
    seeds scored, its mean test BLEU and its ratio to dense's mean (a run landed without the README following, or
    a figure mistyped, fails here)."""
    ledger = os.path.join(ROOT, "benchmarks", "study_runs", "multi30k")
    scored = {}
    for name in os.listdir(ledger):
        result = os.path.join(ledger, name, "result.json")
        if os.path.exists(result):
            with open(result, encoding="utf-8") as f:
                scored[name] = json.load(f).get("test_bleu")

    def means(stem):
        bleus = [b for n, b in scored.items() if re.fullmatch(re.escape(stem) + r"-s\d+", n) and b is not None]
        return len(bleus), sum(bleus) / len(bleus)

    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        rows = [line for line in f if line.startswith("| ")]
    dense = means(STUDY_ROWS["dense Transformer, tuned"][0])[1]
    seen = set()
    for line in rows:
        cells = [c.strip() for c in line.split("|")[1:-1]]
        label = next((k for k in STUDY_ROWS if cells[0].startswith(k)), None)
        if label is None:
            continue
        seen.add(label)
        seeds = int(cells[1].split()[0])
        bleus = [float(b) for b in cells[2].split(" / ")]
        ratios = [1.0] if cells[3] == "1" else [float(r.split()[0]) for r in cells[3].split(" / ")]
        for stem, bleu, ratio in zip(STUDY_ROWS[label], bleus, ratios, strict=True):
            n, mean = means(stem)
            assert (n, f"{mean:.2f}") == (seeds, f"{bleu:.2f}"), (label, stem, n, mean)
            assert abs(mean / dense - ratio) <= 0.0015, (label, stem, mean / dense, ratio)
    assert seen == set(STUDY_ROWS)


def test_study_tables_copies_the_reports_tables_into_the_study_section(tmp_path):
    """docs/study_tables.py: a study table takes the report's table of the same header (in the doc's indentation);
    a header the report holds twice or not at all, tables outside the section and the prose stay; --check says
    whether anything differs; a missing report is refused in one line and nothing is written."""
    doc = tmp_path / "results.md"
    report = tmp_path / "report.md"
    doc_lines = [
        "# Results", "", "| model | bleu |", "|---|---|", "| old outside | 1 |", "",
        "## The converged study", "", "prose before", "", "| model | bleu |", "|---|---|", "| old | 1 |", "",
        "* a bullet", "", "  | variant | valid |", "  |---|---|", "  | old | 2 |", "",
        "| setting | best |", "|---|---|", "| old | 3 |", "", "| own | table |", "|---|---|", "| kept | 4 |", "",
        "## Learning speed", "", "| model | bleu |", "|---|---|", "| old after | 5 |", ""]
    report_lines = [
        "| setting | best |", "|---|---|", "| dense | 9 |", "", "| setting | best |", "|---|---|", "| mask | 8 |", "",
        "| model | bleu |", "|---|---|", "| dense | 41.95 |", "| masks_only | 33.37 |", "",
        "| variant | valid |", "|---|---|", "| new | 35.33 |", ""]
    doc.write_text("\n".join(doc_lines), encoding="utf-8")
    report.write_text("\n".join(report_lines), encoding="utf-8")
    script = os.path.join(ROOT, "docs", "study_tables.py")

    def run(*args):
        return subprocess.run([sys.executable, script, *args], capture_output=True, text=True, check=False)

    r = run(str(report), "--doc", str(doc), "--check")
    assert r.returncode == 1 and "2 such tables" in r.stdout and "0 such tables" in r.stdout, r.stdout + r.stderr
    assert "| old | 1 |" in doc.read_text(encoding="utf-8")  # --check writes nothing
    assert run(str(report), "--doc", str(doc)).returncode == 0
    text = doc.read_text(encoding="utf-8")
    assert "prose before\n\n| model | bleu |\n|---|---|\n| dense | 41.95 |\n| masks_only | 33.37 |\n\n* a bullet" in text
    assert "  | variant | valid |\n  |---|---|\n  | new | 35.33 |\n" in text
    for kept in ("| old outside | 1 |", "| old | 3 |", "| kept | 4 |", "| old after | 5 |"):
        assert kept in text, kept
    assert run(str(report), "--doc", str(doc), "--check").returncode == 0
    r = run(str(tmp_path / "absent.md"), "--doc", str(doc))
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "absent.md does not exist" in r.stderr
