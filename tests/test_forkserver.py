"""The tests' warm start (forkserver.py): a forked command behaves as the fresh process it replaces."""

import os
import pathlib
import signal
import subprocess
import threading
import time

import pytest
from conftest import BIN, ROOT, SM, TRAIN, _fork_server, run_cli, script_env

pytestmark = [pytest.mark.e2e,  # runs our CLI in subprocesses
              pytest.mark.skipif(os.environ.get("OLL_TESTS_FORK") == "0", reason="the fork server is off (OLL_TESTS_FORK=0)")]


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


def _shimmed(server, name):
    """The pids of the commands `name` the server's shims have forked so far."""
    log = pathlib.Path(server.workdir, "shims.log")
    lines = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
    return [int(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(f"{name}: forked, pid ")]


def test_a_shimmed_command_matches_a_fresh_process(trained, tiny_corpus, tmp_path):
    """What scripts and benchmarks run through the shims (script_env's PATH, ONE_LAYER_LOTTERY_BIN): the shim's stdin,
    stdout and stderr are the command's, output comes as it is written under PYTHONUNBUFFERED (the benchmarks set it),
    and the shim exits as the command does."""
    server = _fork_server()
    env = script_env(PYTHONUNBUFFERED="1")
    before = len(_shimmed(server, "fairseq-interactive"))
    argv = ["fairseq-interactive", tiny_corpus.bin, "--user-dir", "one_layer_lottery", "--path", str(trained),
            "--beam", "2", "--max-len-b", "10"]
    line = (tiny_corpus.root / "prep" / "spm" / "test.src").read_text(encoding="utf-8").splitlines()[0]
    shim = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(120, shim.kill)  # output held back until the end would block readline for ever
    watchdog.start()
    try:
        shim.stdin.write(line + "\n")
        shim.stdin.flush()
        seen = []
        while not seen or not seen[-1].startswith("P-0"):  # its translation, with stdin still open
            seen.append(shim.stdout.readline())
            assert seen[-1], "".join(seen) + shim.stderr.read()
        shim.stdin.close()
        assert shim.wait(timeout=120) == 0
    finally:
        watchdog.cancel()
        shim.kill()
    assert len(_shimmed(server, "fairseq-interactive")) == before + 1, "the shim ran a fresh process"
    fresh = subprocess.run([os.path.join(BIN, argv[0]), *argv[1:]], input=line + "\n", cwd=ROOT, env=env,
                           capture_output=True, text=True, check=True)
    outputs = [[x for x in text.splitlines() if x[:2] in ("S-", "H-", "D-", "P-")] for text in ("".join(seen), fresh.stdout)]
    assert outputs[0] == outputs[1] and outputs[0]
    bad = subprocess.run(["fairseq-interactive", tiny_corpus.bin, "--path", str(tmp_path / "none.pt")], cwd=ROOT,
                         env=env, capture_output=True, text=True, check=False)
    assert bad.returncode == 1 and "none.pt" in bad.stderr and len(_shimmed(server, "fairseq-interactive")) == before + 2


def _interactive_behind_a_shim(server, trained, tiny_corpus, **popen):
    """A shimmed fairseq-interactive waiting on its stdin, and the pid of its command, once that has logged a line."""
    before = _shimmed(server, "fairseq-interactive")
    shim = subprocess.Popen(["fairseq-interactive", tiny_corpus.bin, "--user-dir", "one_layer_lottery", "--path",
                             str(trained)], cwd=ROOT, env=script_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, **popen)
    assert shim.stdout.readline(), "the command wrote nothing"
    (pid,) = _shimmed(server, "fairseq-interactive")[len(before):]
    return shim, pid


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_a_signalled_shim_takes_its_command_with_it(trained, tiny_corpus, signum):
    """A runner that stops a command stops it: TERM is passed on (the shim then dies of it, as the command did);
    a shim killed outright leaves no command behind."""
    server = _fork_server()
    shim, pid = _interactive_behind_a_shim(server, trained, tiny_corpus)
    shim.send_signal(signum)
    assert shim.wait(timeout=60) == -signum
    deadline = time.time() + 60
    while os.path.exists(f"/proc/{pid}") and time.time() < deadline:  # reaped by the process that forked it
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{pid}"), f"the command {pid} outlived its shim"
    assert f"fairseq-interactive: pid {pid} exited {-signum}" in (pathlib.Path(server.workdir) / "shims.log").read_text()


def test_a_signal_the_shim_was_started_ignoring_its_command_ignores(trained, tiny_corpus):
    """As with nohup: a command started with HUP ignored lives through one, sent to it or to its shim."""
    server = _fork_server()
    shim, pid = _interactive_behind_a_shim(server, trained, tiny_corpus,
                                           preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    os.kill(pid, signal.SIGHUP)
    shim.send_signal(signal.SIGHUP)
    time.sleep(1)
    assert shim.poll() is None and os.path.exists(f"/proc/{pid}")
    shim.terminate()
    assert shim.wait(timeout=60) == -signal.SIGTERM
