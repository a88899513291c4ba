"""The tests' warm start (forkserver.py): a forked command behaves as the fresh process it replaces."""

import os
import subprocess

import pytest
from conftest import BIN, ROOT, SM, TRAIN, _fork_server, run_cli

pytestmark = pytest.mark.e2e  # runs our CLI in subprocesses


def test_a_forked_command_matches_a_fresh_process(tmp_path):
    (tmp_path / "ref.txt").write_text("a b c d\n", encoding="utf-8")
    (tmp_path / "hyp.txt").write_text("H-0\t-0.1\ta b c d\nD-0\t-0.1\ta b c d\n", encoding="utf-8")
    server = _fork_server()
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    results = []
    for argv in (["bleu", "hyp.txt", "ref.txt", "--json"],  # relative paths: the working directory is the command's
                 ["bleu", "missing.txt", "ref.txt"],  # a one-line error, exit status 1
                 ["inspect"],  # argparse's usage error, exit status 2
                 ["--help"]):
        before = server.n
        forked = run_cli("one-layer-lottery", *argv, cwd=tmp_path, check=False)
        assert server.n == before + 1, "run_cli did not use the fork server"
        fresh = subprocess.run([os.path.join(BIN, "one-layer-lottery"), *argv], cwd=tmp_path, env=env,
                               capture_output=True, text=True, check=False)
        assert (forked.returncode, forked.stdout, forked.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
        results.append(forked)
    assert results[0].returncode == 0 and '"bleu": 100.0' in results[0].stdout
    assert [r.returncode for r in results[1:]] == [1, 2, 0]


def test_another_start_up_environment_runs_a_fresh_process(monkeypatch):
    server = _fork_server()
    run_cli("one-layer-lottery", "--help")
    before = server.n
    monkeypatch.setenv("OLL_SOME_SETTING", "1")  # the command's own: it runs forked, with the variable set
    assert run_cli("one-layer-lottery", "--help").returncode == 0 and server.n == before + 1
    monkeypatch.setenv("OMP_NUM_THREADS", "7")  # read as torch starts: a fresh process
    assert run_cli("one-layer-lottery", "--help").returncode == 0 and server.n == before + 1


def _log_shape(text):
    """(level, logger) of each log line, timestamps and figures aside."""
    return [tuple(p.strip() for p in line.split("|")[1:3]) for line in text.splitlines() if line.count("|") >= 3]


def test_fairseq_train_logs_where_a_fresh_one_does(tiny_corpus, tmp_path):
    """fairseq-train configures logging (stdout, INFO) before it imports fairseq; the server imported fairseq
    already, whose own logging.basicConfig calls would win without the server's care."""
    argv = [tiny_corpus.bin, *SM, *TRAIN, "--max-update", "1", "--seed", "3"]
    forked = run_cli("fairseq-train", *argv, "--save-dir", tmp_path / "a")
    fresh = subprocess.run([os.path.join(BIN, "fairseq-train"), *map(str, argv), "--save-dir", str(tmp_path / "b")],
                           cwd=ROOT, env=dict(os.environ, PYTHONWARNINGS="ignore"), capture_output=True, text=True,
                           check=True)
    assert ("INFO", "fairseq_cli.train") in _log_shape(forked.stdout)
    assert _log_shape(forked.stdout) == _log_shape(fresh.stdout)
    assert _log_shape(forked.stderr) == _log_shape(fresh.stderr)
