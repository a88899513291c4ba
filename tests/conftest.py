import argparse
import atexit
import contextlib
import importlib
import io
import os
import random
import subprocess
import sys
import tempfile
from types import SimpleNamespace

import forkserver
import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs two workers on two cores: one thread each, subprocesses too
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
SHARED_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")


_FORK = []


def _fork_server():
    if not _FORK:
        _FORK.append(forkserver.Server(tempfile.mkdtemp(prefix="oll-tests-fork-")))
        atexit.register(_FORK[0].close)
    return _FORK[0]


# the console scripts a shim can fork: fairseq's and ours
COMMANDS = ("fairseq-generate", "fairseq-hydra-train", "fairseq-interactive", "fairseq-preprocess", "fairseq-score",
            "fairseq-train", "fairseq-validate", "one-layer-lottery")


def _command_env() -> tuple[dict, str | None]:
    """The environment the tests run commands in (warnings off), and the fork server's shim directory, or None."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return env, _fork_server().shims(env, COMMANDS)


def script_env(**extra) -> dict:
    """The environment a shell recipe runs in, as a user's would: this environment's console scripts first on PATH,
    where they can be, the fork server's shims (forkserver.py: the same commands, 5-8 s less start-up each)."""
    env, shims = _command_env()
    return dict(env, PATH=os.pathsep.join(p for p in (shims, BIN, os.environ["PATH"]) if p), **extra)


def run_benchmark(script, *args, timeout=900):
    """`python benchmarks/SCRIPT ARGS` as a user runs it, with its fairseq-* and one-layer-lottery commands taken from
    the fork server's shims where they can be (ONE_LAYER_LOTTERY_BIN, read by benchmarks/common.py)."""
    env, shims = _command_env()
    if shims:
        env["ONE_LAYER_LOTTERY_BIN"] = shims
    return subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout, check=False)


def run_cli(*args, check=True, cwd=ROOT, timeout=600):
    """Run one of the installed commands (fairseq-*, one-layer-lottery) as a user would: its own process, with
    its argv, working directory and environment. A fork of a process that has already imported torch and
    fairseq where it can (forkserver.py: 5-8 s less start-up a command), a fresh process otherwise."""
    cmd = [os.path.join(BIN, args[0]), *map(str, args[1:])]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    r = None
    if args[0].startswith("fairseq-") or args[0] == "one-layer-lottery":
        r = _fork_server().run(cmd[0], cmd[1:], cwd, env, timeout)
    if r is None:
        r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
    return r


def run_card(card: str, *replace: tuple[str, str]):
    """A published folder's card (its README.md text): its bash block run as a user would, from the repository's
    root with this environment's commands first on PATH, each (old, new) replaced in it first."""
    commands = card.split("```bash\n")[1].split("```")[0]
    for old, new in replace:
        commands = commands.replace(old, new)
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ["PATH"])
    return subprocess.run(["bash", "-o", "pipefail", "-c", commands], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=600, check=False)


def _main_in_process(main, argv):
    """A command's main(argv) run in this process: (exit status, stdout, stderr), ending as its command line would
    (argparse exits 2, a ConfigError prints one line and returns 1)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return code or 0, out.getvalue(), err.getvalue()


def olt(*args, check=True):
    """`one-layer-lottery ARGS` run in this process (the command's own main), for the many checks of what a command
    does or refuses; a subprocess costs 4-5 s of start-up each. The e2e tests still run it as a command too."""
    from one_layer_lottery import cli

    code, out, err = _main_in_process(cli.main, args)
    if check and code != 0:
        raise AssertionError(f"one-layer-lottery {' '.join(map(str, args))} exited {code}\n{err[-4000:]}")
    return SimpleNamespace(returncode=code, stdout=out, stderr=err)


def benchmark_main(script, *argv):
    """benchmarks/<script>'s main(argv) in this process, for checks that end before any work: (exit status,
    stderr)."""
    if os.path.join(ROOT, "benchmarks") not in sys.path:
        sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    code, _, err = _main_in_process(importlib.import_module(script.removesuffix(".py")).main, argv)
    return code, err


def make_dictionary(n_words=40):
    from fairseq.data import Dictionary

    d = Dictionary()
    for i in range(n_words):
        d.add_symbol(f"w{i}")
    return d


def build_model(arch="supermask_transformer_tiny", *extra, src_words=40, tgt_words=30, **config):
    """Build a model exactly as fairseq-train would from these command-line flags (and `config`: values a saved
    config holds that are not flags)."""
    from fairseq import options

    import one_layer_lottery  # noqa: F401
    from one_layer_lottery.models.supermask_transformer import SupermaskTransformerModel

    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, ["dummy-data", "--task", "translation", "--arch", arch, *extra])
    for k, v in config.items():
        setattr(args, k, v)
    task = SimpleNamespace(source_dictionary=make_dictionary(src_words), target_dictionary=make_dictionary(tgt_words))
    return SupermaskTransformerModel.build_model(args, task)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """A small synthetic corpus, sentencepiece'd and binarized by the project's own pipeline."""
    from one_layer_lottery import corpus, data

    root = tmp_path_factory.mktemp("corpus")
    corpus.generate(str(root / "raw"), seed=5, sizes={"train": 1500, "valid": 40, "test": 37})
    data.prepare(str(root / "raw"), str(root / "prep"), "src", "tgt", vocab_size=600, log=lambda *_: None)
    return SimpleNamespace(root=root, bin=str(root / "prep" / "bin"), raw=str(root / "prep" / "raw"))


@pytest.fixture(scope="session")
def tiny_glue(tmp_path_factory):
    """A small synthetic sentence-pair task in GLUE's RTE layout, prepared by the project's own pipeline: the
    label says whether the second sentence is the first one's synthetic translation."""
    from one_layer_lottery import corpus, glue

    root = tmp_path_factory.mktemp("glue")
    corpus.generate(str(root / "pairs"), seed=7, sizes={"train": 400, "valid": 60, "test": 1})
    rng = random.Random(0)
    for split, out in (("train", "train"), ("valid", "dev")):
        src = (root / "pairs" / f"{split}.src").read_text(encoding="utf-8").splitlines()
        tgt = (root / "pairs" / f"{split}.tgt").read_text(encoding="utf-8").splitlines()
        rows = ["sentence1\tsentence2\tlabel\tidx"]
        for i, (s, t) in enumerate(zip(src, tgt)):
            match = rng.random() < 0.5
            rows.append(f"{s}\t{t if match else rng.choice(tgt)}\t{int(match)}\t{i}")
        (root / f"{out}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    glue.prepare_glue("RTE", str(root), str(root / "prep"), vocab_size=300, log=lambda *_: None)
    return str(root / "prep")


TRAIN = ["--task", "translation", "--optimizer", "adam", "--lr", "1e-3", "--lr-scheduler", "inverse_sqrt",
         "--warmup-updates", "10", "--criterion", "label_smoothed_cross_entropy", "--max-tokens", "2048",
         "--no-epoch-checkpoints", "--disable-validation", "--num-workers", "0", "--log-format", "simple"]
SM = ["--user-dir", "one_layer_lottery", "--arch", "one_layer_supermask_transformer_tiny"]
MASKED = [a if a != "adam" else "masked_adam" for a in TRAIN]  # TRAIN with the masked-only Adam
GEN = ["--beam", "5", "--batch-size", "16", "--required-batch-size-multiple", "1", "--max-len-b", "12"]


def hypotheses(bin_dir, ckpt, *extra):
    """fairseq-generate's hypothesis lines (H-...) for the test set, sorted: the command's own main run in this
    process, to compare two checkpoints' translations without two process starts (tests of the command itself
    run it with run_cli)."""
    from fairseq import options
    from fairseq_cli import generate

    argv = [bin_dir, "--user-dir", os.path.join(ROOT, "one_layer_lottery"), "--path", ckpt, *GEN, *extra]
    args = options.parse_args_and_arch(options.get_generation_parser(), [str(a) for a in argv])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        generate.main(args)
    return sorted(line for line in out.getvalue().splitlines() if line.startswith("H-"))


@pytest.fixture(scope="session")
def trained(tiny_corpus, tmp_path_factory):
    save = tmp_path_factory.mktemp("ckpt")
    run_cli("fairseq-train", tiny_corpus.bin, *SM, *TRAIN, "--max-update", "6", "--seed", "3", "--save-dir", save)
    return save / "checkpoint_last.pt"


@pytest.fixture(scope="session")
def dense_ckpt(tiny_corpus, tmp_path_factory):
    save = tmp_path_factory.mktemp("dense")
    run_cli("fairseq-train", tiny_corpus.bin, "--arch", "transformer", "--encoder-layers", "1", "--decoder-layers",
            "1", "--encoder-embed-dim", "64", "--decoder-embed-dim", "64", "--encoder-ffn-embed-dim", "64",
            "--decoder-ffn-embed-dim", "64", *TRAIN, "--max-update", "2", "--save-dir", save)
    return save / "checkpoint_last.pt"


__all__ = ["BIN", "GEN", "MASKED", "ROOT", "SHARED_DATA", "argparse", "build_model", "hypotheses", "make_dictionary",
           "run_cli"]
