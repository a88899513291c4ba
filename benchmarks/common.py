"""What the benchmarks share: running fairseq's commands, scoring, stored bytes, int8 models, plots.

Benchmarks import this module and never each other; nothing here belongs in the package (users do not need it).
"""

import glob
import json
import logging
import os
import re
import statistics
import subprocess
import sys
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from one_layer_lottery import data
from one_layer_lottery.errors import ConfigError
from one_layer_lottery.io import atomic_path

# fairseq-train, fairseq-generate and one-layer-lottery: beside this Python, or in ONE_LAYER_LOTTERY_BIN (the tests
# point it at shims that fork each command from a process that has imported torch and fairseq already)
BIN = os.environ.get("ONE_LAYER_LOTTERY_BIN") or os.path.dirname(sys.executable)
USER_DIR = os.path.join(ROOT, "one_layer_lottery")
GENERATION = {"beam": 5, "max_len_a": 1.2, "max_len_b": 10}  # every benchmark's generation settings


# the benchmarks' fixed settings (the converged study tunes its own: benchmarks/study.py)
DENSE_ARGS = ["--arch", "transformer", "--optimizer", "adam", "--lr", "1e-3", "--warmup-updates", "400",
              "--dropout", "0.3"]
SUPERMASK_ARGS = ["--arch", "one_layer_supermask_transformer_tiny", "--optimizer", "masked_adam", "--lr", "4e-3",
                  "--warmup-updates", "200", "--dropout", "0.1"]
VALID = re.compile(r"valid on 'valid' subset \| loss ([\d.]+) .*\| num_updates (\d+)")
WALL = re.compile(r"num_updates=(\d+),.* wall=(\d+)")  # fairseq's wall clock; it restarts when a run resumes


def add_shape_args(p, vocab: int = 6000) -> None:
    """The model shape every training benchmark takes (the benchmark shape: 3+3 layers, 128/256, 4 heads)."""
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--ffn", type=int, default=256)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=vocab, help="sentencepiece vocabulary (per language)")


def add_parallel_args(p, jobs: int = 1, threads: int = 0) -> None:
    p.add_argument("--jobs", type=int, default=jobs, help="runs trained at once")
    p.add_argument("--threads", type=int, default=threads, help="torch threads per run (0: torch's default)")


def add_corpus_args(p, work: str) -> None:
    p.add_argument("raw_dir", help="raw parallel text (train/val|valid/test*.{de,en}[.gz]), e.g. ../shared/data/multi30k")
    p.add_argument("--src", default="de")
    p.add_argument("--tgt", default="en")
    p.add_argument("--work", default=work)
    p.add_argument("--max-tokens", type=int, default=4096)


def add_run_args(p, work: str, updates: int, eval_every: int) -> None:
    """The options every fixed-budget training benchmark shares: corpus, shape, budget, seed, parallelism."""
    add_corpus_args(p, work)
    add_shape_args(p)
    add_parallel_args(p)
    p.add_argument("--updates", type=int, default=updates)
    p.add_argument("--eval-every", type=int, default=eval_every)
    p.add_argument("--warmup", type=int, help="warmup updates of every model (default: each model's own)")
    p.add_argument("--seed", type=int, default=1)


def check_run_args(p, a) -> None:
    if a.jobs < 1:
        p.error(f"--jobs {a.jobs} must be at least 1")
    for v, name in ((a.updates, "--updates"), (a.eval_every, "--eval-every")):
        if v < 1:
            p.error(f"{name} {v} must be a positive number of updates")


def shape_flags(a, mult: float = 1) -> list:
    dim, ffn = int(a.dim * mult), int(a.ffn * mult)
    return ["--encoder-layers", a.layers, "--decoder-layers", a.layers, "--encoder-embed-dim", dim,
            "--decoder-embed-dim", dim, "--encoder-ffn-embed-dim", ffn, "--decoder-ffn-embed-dim", ffn,
            "--encoder-attention-heads", a.heads, "--decoder-attention-heads", a.heads,
            "--share-decoder-input-output-embed"]


def prepare_once(a) -> str:
    """WORK/data: the corpus prepared once (sentencepiece, binarized), reused by every run and later invocation."""
    if not os.path.isdir(a.raw_dir):
        raise ConfigError(f"data directory {a.raw_dir!r} does not exist")
    os.makedirs(a.work, exist_ok=True)
    prepared = os.path.join(a.work, "data")
    if not os.path.isdir(os.path.join(prepared, "bin")):
        data.prepare(a.raw_dir, prepared, a.src, a.tgt, vocab_size=a.vocab)
    return prepared


def train(a, name: str, args: list, bin_dir: str, mult: float = 1, extra: list = ()) -> float:
    """fairseq-train one run into WORK/name, saving and validating every --eval-every updates (resuming from its
    last checkpoint if there is one); streams its progress; returns its start time."""
    save = os.path.join(a.work, name)
    common = ["--task", "translation", "--adam-betas", "(0.9,0.98)", "--lr-scheduler", "inverse_sqrt",
              "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--max-tokens", a.max_tokens,
              "--max-update", a.updates, "--seed", a.seed, "--save-interval-updates", a.eval_every,
              "--validate-interval-updates", a.eval_every, "--keep-interval-updates", "-1", "--no-epoch-checkpoints",
              "--save-interval", "1000000", "--validate-interval", "1000000", "--log-format", "simple",
              "--log-interval", "100", "--num-workers", "0", "--user-dir", USER_DIR,
              "--tensorboard-logdir", os.path.join(a.work, "tb", name), "--save-dir", save]
    cmd = [command("fairseq-train"), bin_dir, *args, *shape_flags(a, mult), *common, *extra]
    print(f"[{name}] fairseq-train {' '.join(map(str, cmd[2:]))}", flush=True)
    start = time.time()
    log_path = os.path.join(a.work, f"{name}.train.log")
    with open(log_path, "a", encoding="utf-8", buffering=1) as log:  # a resumed run adds to its log
        proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=thread_env(a.threads))
        for line in proc.stdout:
            log.write(line)
            if "train_inner" in line or "valid on" in line or "Error" in line:
                print(f"[{name}] {line.split(' | ', 3)[-1].strip()}", flush=True)
    if proc.wait() != 0:
        raise ConfigError(f"fairseq-train failed for {name} (exit {proc.returncode}); see {log_path}")
    return start


def score_checkpoints(a, name: str, label: str, start: float, prepared: str, extra_bins: dict) -> list[dict]:
    """One row per saved checkpoint of a run: update, wall time since it started, valid loss, test BLEU (and, for the
    last checkpoint, BLEU on every extra test set: {name: (bin dir, reference file)})."""
    save = os.path.join(a.work, name)
    with open(os.path.join(a.work, f"{name}.train.log"), encoding="utf-8") as f:
        text = f.read()
    losses = {int(u): float(v) for v, u in VALID.findall(text)}
    walls, resumed = {}, False
    for u, w in WALL.findall(text):
        resumed = resumed or (bool(walls) and float(w) < max(walls.values()))
        walls[int(u)] = "" if resumed else float(w)  # after a resume the clock means nothing: left blank
    ckpts = {int(re.search(r"_(\d+)\.pt$", p).group(1)): p for p in glob.glob(os.path.join(save, "checkpoint_*_*.pt"))}
    if (max(ckpts) if ckpts else 0) < a.updates:  # the run stopped between two saves
        ckpts[a.updates] = os.path.join(save, "checkpoint_last.pt")
    refs = data.read_lines(os.path.join(prepared, "raw", f"test.{a.tgt}"))
    rows = []
    for update in sorted(ckpts):
        bleu = round(data.bleu(generate(ckpts[update], os.path.join(prepared, "bin"), threads=a.threads), refs)[0], 2)
        rows.append({"model": name, "label": label, "update": update,
                     "wall_s": walls.get(update, round(os.path.getmtime(ckpts[update]) - start, 1)),
                     "valid_loss": losses.get(update, ""), "bleu": bleu})
        print(f"[{name}] update {update}: valid loss {losses.get(update, '-')}, test BLEU {bleu:.2f}", flush=True)
    for test, (bin_dir, ref) in extra_bins.items():
        hyps = generate(ckpts[max(ckpts)], bin_dir, threads=a.threads)
        rows[-1][f"bleu_{test}"] = round(data.bleu(hyps, data.read_lines(ref))[0], 2)
        print(f"[{name}] {test}: BLEU {rows[-1][f'bleu_{test}']:.2f}", flush=True)
    return rows


def median_range(values: list[float], digits: int = 3) -> dict:
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits)}


DICT_SIZES = {"iwslt_de_en": (8848, 6632), "wmt_en_de": (40000, 40000), "tiny": (2000, 2000)}


def dictionary(n: int):
    """A fairseq dictionary of n symbols (benchmarks build models without data)."""
    from fairseq.data import Dictionary

    d = Dictionary()
    for i in range(n - d.nspecial):
        d.add_symbol(f"w{i}")
    return d


def run_guarded(prog: str, fn, *args) -> int:
    """A benchmark's body: a ConfigError (a bad value, missing data) becomes one line and exit status 1."""
    from one_layer_lottery.errors import run_main

    return run_main(prog, fn, *args)


def command(name: str) -> str:
    """A console script of this virtual environment (fairseq-train, one-layer-lottery, ...)."""
    return os.path.join(BIN, name)


def thread_env(threads: int) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def generate(ckpt: str, bin_dir: str, subset: str = "test", threads: int = 0) -> list[str]:
    """Detokenized hypotheses of a split, in corpus order (fairseq-generate, GENERATION's settings)."""
    cmd = [command("fairseq-generate"), bin_dir, "--user-dir", USER_DIR, "--path", ckpt,
           "--beam", GENERATION["beam"], "--max-len-a", GENERATION["max_len_a"], "--max-len-b", GENERATION["max_len_b"],
           "--batch-size", "128", "--required-batch-size-multiple", "1", "--remove-bpe", "sentencepiece",
           "--gen-subset", subset]
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=thread_env(threads), check=False)
    if r.returncode != 0:
        raise ConfigError(f"fairseq-generate failed on {ckpt}: {r.stderr.strip().splitlines()[-1:]}")
    return data.read_hypotheses(r.stdout)


def write_json(path: str, obj) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)


def read_json(path: str):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# ---- stored bytes: one rule ---------------------------------------------------------------------

def artifact_bytes(ckpt: str, out: str) -> dict:
    """Bytes of the seed-plus-bits artifact of a supermask checkpoint (written by artifact.export, the function
    `one-layer-lottery export` runs, here in this process): the file, and the model in it without what a dense model
    needs as well (the sentencepiece models and the dictionaries), the figure to set against a dense model's
    weights."""
    from one_layer_lottery import artifact

    try:
        report = artifact.export(ckpt, out)
    except ConfigError as e:
        raise ConfigError(f"export failed for {ckpt}: {e}") from e
    return {"artifact_bytes": report["bytes"], "model_bytes": report["model_bytes"]}


def checkpoint_bytes(ckpt: str) -> int:
    """Bytes under the one rule (io.stored_bytes: mask positions, kept values and other tensors in fp16, the seed) of
    any checkpoint here: a supermask, a pruned model (its zeros are its mask) or a dense one."""
    return pruned(ckpt)[0]


def pruned(ckpt: str) -> tuple[int, float]:
    """(bytes under the one rule, fraction of the prunable weights that are not zero) of a checkpoint."""
    import torch

    from one_layer_lottery.io import read_checkpoint, stored_bytes
    from one_layer_lottery.pruning import is_prunable

    state = read_checkpoint(ckpt)["model"]
    kept = {k: int(torch.count_nonzero(v)) for k, v in state.items() if is_prunable(k, v)}
    total = sum(state[k].numel() for k in kept)
    sparse = any(n < state[k].numel() for k, n in kept.items())
    return stored_bytes(state, kept if sparse else None), (sum(kept.values()) / total if total else 1.0)


def fp16_bytes(state: dict) -> int:
    """Bytes of a trained model's weights in fp16 (the one rule, io.stored_bytes; counters are not weights)."""
    from one_layer_lottery.io import stored_bytes

    return stored_bytes({k: t for k, t in state.items() if not k.endswith("version")})


def quantize_int8(model):
    """torch's post-training dynamic int8 quantization of every linear layer (a tied output projection keeps its
    float table, shared with the embedding); attention then runs through its projections' own forward."""
    import torch
    from torch import nn

    tied = getattr(getattr(model, "decoder", None), "share_input_output_embed", False)
    names = {n for n, m in model.named_modules() if isinstance(m, nn.Linear)
             and not (tied and n.endswith("output_projection"))}
    q = torch.ao.quantization.quantize_dynamic(model, {n: torch.ao.quantization.default_dynamic_qconfig
                                                       for n in names}, dtype=torch.qint8)
    for m in q.modules():
        if hasattr(m, "skip_embed_dim_check"):
            m.skip_embed_dim_check = True  # fairseq's fused attention reads .weight tensors, which int8 linears lack
    return q


def quantize_tables_int8(model) -> int:
    """Rounds every embedding table of a float model to int8 in place, symmetric, one fp16 scale a row, as such a
    table would be stored and read back (its values become scale * an integer in [-127, 127]); returns the bytes
    this saves against the tables in fp16, each table once (a tied output projection shares its table)."""
    import torch
    from torch import nn

    saved, seen = 0, set()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Embedding) and m.weight.data_ptr() not in seen:
                seen.add(m.weight.data_ptr())
                w = m.weight
                scale = (w.abs().amax(dim=1, keepdim=True) / 127).half().float()
                scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero row (padding) stays 0
                w.copy_((w / scale).round().clamp(-127, 127) * scale)
                saved += 2 * w.numel() - (w.numel() + 2 * w.shape[0])
    return saved


def int8_bytes(qmodel) -> int:
    """Bytes of a dynamically quantized model, counted from the model: each int8 linear's weight (1 byte a value,
    plus its fp32 scale and int32 zero point) and fp16 bias; every other float tensor its state dict holds in fp16,
    each once (what is computed, such as sinusoidal positions, is not stored)."""
    import torch

    total, quantized = 0, []
    for name, m in qmodel.named_modules():
        if isinstance(m, torch.ao.nn.quantized.dynamic.Linear):
            quantized.append(name + ".")
            w = m.weight()
            total += w.numel() * w.element_size() + 8 + (2 * m.bias().numel() if m.bias() is not None else 0)
    rest = {k: t for k, t in qmodel.state_dict().items() if not k.startswith(tuple(quantized))
            and isinstance(t, torch.Tensor)}
    return total + fp16_bytes(rest)


def translate_in_process(model, task, subset: str = "test") -> list[str]:
    """Detokenized hypotheses of a split by a model in this process (for models fairseq-generate cannot load, such
    as int8 ones), with GENERATION's settings; corpus order."""
    import torch
    from fairseq import utils
    from omegaconf import OmegaConf

    task.load_dataset(subset)
    itr = task.get_batch_iterator(dataset=task.dataset(subset), max_sentences=128, required_batch_size_multiple=1,
                                  ignore_invalid_inputs=False).next_epoch_itr(shuffle=False)
    gen_cfg = OmegaConf.create({"beam": GENERATION["beam"], "max_len_a": GENERATION["max_len_a"],
                                "max_len_b": GENERATION["max_len_b"]})
    generator = task.build_generator([model], gen_cfg)
    out = {}
    model.eval()
    with torch.no_grad():
        for sample in itr:
            for i, hyps in zip(sample["id"].tolist(), task.inference_step(generator, [model], sample)):
                text = task.target_dictionary.string(utils.strip_pad(hyps[0]["tokens"], task.target_dictionary.pad()))
                out[i] = text.replace(" ", "").replace("\u2581", " ").strip()
    return [out[i] for i in sorted(out)]


def load_for_inference(ckpt: str, bin_dir: str):
    """(model, task) of a fairseq checkpoint, on CPU, in eval mode (fairseq's and torch's chatter silenced)."""
    from fairseq import checkpoint_utils

    logging.getLogger("fairseq").setLevel(logging.WARNING)
    for message in ("torch.quantize_per_tensor", "'pin_memory' argument"):
        warnings.filterwarnings("ignore", message=message)

    models, _, task = checkpoint_utils.load_model_ensemble_and_task([ckpt], arg_overrides={"data": bin_dir})
    return models[0].float().eval(), task


def save_plot(fig, png: str) -> None:
    from one_layer_lottery.io import save_figure

    save_figure(fig, png)
