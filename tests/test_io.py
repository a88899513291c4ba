"""io.py: checkpoint reading with one-line errors, atomic writes, and the one rule for stored bytes."""

import os
import subprocess
import sys

import pytest
import torch
from conftest import olt

from one_layer_lottery.errors import ConfigError
from one_layer_lottery.io import atomic_path, read_checkpoint, save, stored_bytes, write_text


def test_stored_bytes_counts_positions_values_and_fp16_tensors_under_one_rule():
    state = {"w": torch.zeros(10, 8), "b": torch.zeros(10), "steps": torch.zeros(1, dtype=torch.long)}
    assert stored_bytes(state, {"w": 20}) == 10 + 2 * 20 + 2 * 10  # a pruned weight: positions and kept values
    assert stored_bytes(state, {"w": 0}) == 10 + 2 * 10  # positions only
    assert stored_bytes(state) == 2 * 90  # a dense model: fp16 weights
    shared = torch.zeros(4, 4)
    supermask = {"enc.scores": torch.zeros(8, 16), "enc.frozen_weight": torch.zeros(8, 16), "emb.weight": shared,
                 "out.weight": shared, "encoder.version": torch.ones(1)}
    # a supermask: its mask (1 bit a weight), the seed (8 bytes), a tied table once; random weights regenerated
    assert stored_bytes(supermask) == 16 + 8 + 2 * 16


def test_read_checkpoint_names_the_file_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match="checkpoint '.*missing.pt' does not exist"):
        read_checkpoint(str(tmp_path / "missing.pt"))
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="--pretrained-embeddings '.*bad.pt' is not a readable fairseq checkpoint"):
        read_checkpoint(str(tmp_path / "bad.pt"), "--pretrained-embeddings")
    with pytest.raises(ConfigError, match="checkpoint '.*' is a directory, not a file"):
        read_checkpoint(str(tmp_path))
    torch.save({"model": {"w": torch.ones(1)}}, tmp_path / "ok.pt")
    assert read_checkpoint(str(tmp_path / "ok.pt"))["model"]["w"].item() == 1


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_every_command_refuses_a_missing_or_directory_input_in_one_line(tmp_path, kind):
    bad = tmp_path / "missing.pt" if kind == "missing" else tmp_path
    out = tmp_path / "out"
    commands = [["summary", bad], ["export", bad, out], ["translate", bad, "hallo"], ["expand", bad, out],
                ["inspect", bad], ["average", bad, "--out", out], ["bleu", bad, bad],
                ["analyze", bad, bad, "--data", tmp_path], ["classify", bad, tmp_path]]
    for argv in commands:
        r = olt(*argv, check=False)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 1 and len(lines) == 1, (argv, r.stderr[-2000:])
        assert lines[0].startswith("one-layer-lottery: error: ") and str(bad) in lines[0], (argv, lines)
        assert not out.exists(), argv


def test_atomic_writes_leave_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "out.txt"
    write_text(str(path), "first")
    with pytest.raises(RuntimeError), atomic_path(str(path)) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("half")
        raise RuntimeError("killed midway")
    assert path.read_text() == "first" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_writes_give_a_new_file_the_mode_open_would(tmp_path):
    """mkstemp makes its file 0600: a published card or artifact must be readable as any file written is."""
    old = os.umask(0o022)
    try:
        write_text(str(tmp_path / "card.md"), "x")
        os.umask(0o077)
        write_text(str(tmp_path / "private.md"), "x")
    finally:
        os.umask(old)
    assert (tmp_path / "card.md").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "private.md").stat().st_mode & 0o777 == 0o600


def test_plots_stay_quiet_under_fairseqs_debug_root_logger(tmp_path):
    """Importing fairseq sets the root logger to DEBUG; a plot must not print matplotlib's debug lines."""
    code = ("import fairseq, logging\nassert logging.getLogger().level == logging.DEBUG\n"
            "from one_layer_lottery.io import pyplot, save_figure\nplt = pyplot()\nfig, ax = plt.subplots()\n"
            f"ax.plot([1, 2], label='x')\nax.legend()\nsave_figure(fig, {str(tmp_path / 'p.png')!r})\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "DEBUG" not in r.stderr and (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_save_writes_the_same_bytes_for_the_same_object_whatever_the_path(tmp_path):
    """A published model saved again with the same weights is the same file (no diff in the repository): torch names
    an archive's records after the file, and save writes through a temporary name."""
    obj = {"model": {"w": torch.arange(6, dtype=torch.float16).reshape(2, 3)}, "cfg": None}
    save(obj, str(tmp_path / "a.pt"))
    save(obj, str(tmp_path / "b" / "other_name.pt"))
    first, second = (tmp_path / "a.pt").read_bytes(), (tmp_path / "b" / "other_name.pt").read_bytes()
    assert first == second
    assert torch.equal(torch.load(tmp_path / "a.pt")["model"]["w"], obj["model"]["w"])
