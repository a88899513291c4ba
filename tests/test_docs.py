"""The generated reference stays in step with the code."""

import glob
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
