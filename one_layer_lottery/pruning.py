"""Trained-sparse baselines: gradual magnitude pruning of a dense Transformer and the weight snapshots that lottery
tickets rewind to. The flags live on the registered `pruned_transformer` model (models/pruned_transformer.py).

* `--remaining-ratio K` (with `--arch pruned_transformer_*`): gradual magnitude pruning (Zhu & Gupta 2017). The
  fraction kept of every weight matrix and token embedding table falls from 1 at `--prune-start-update` to K at
  `--prune-end-update` on the cubic schedule every ramp here uses (`masks.cubic_schedule`); each tensor keeps its
  own largest |W| with the exact-count rule of our supermasks (`masks.keep_largest`: drop exactly int((1 - k) n),
  ties keep the lowest index); `--prune-scope global` instead ranks all of them together (one threshold), so each
  layer finds its own fraction. Pruned weights are zeros in the weights themselves, so a checkpoint is a dense
  fairseq checkpoint; what once was pruned stays pruned. A start equal to the end prunes to K at once and keeps
  that mask (the retraining of a lottery ticket).
* `--save-weights-at-updates N[,N...]`: write SAVE_DIR/weights_update{N}.pt (the model's state dict) after N
  updates; 0 is the initialisation. `one-layer-lottery ticket` rewinds to them (Brix et al. 2020).
"""

import glob
import os
import re
import weakref

import torch
from torch import Tensor, nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from .errors import ConfigError
from .io import atomic_path, read_checkpoint, save
from .masks import check_remaining_ratio, cubic_schedule, keep_largest, n_pruned

SCOPES = ("tensor", "global")


def parse_updates(text) -> tuple[int, ...]:
    """--save-weights-at-updates: comma-separated non-negative update counts."""
    if text is None or str(text).strip() == "":
        return ()
    try:
        out = tuple(sorted({int(v) for v in str(text).split(",")}))
    except ValueError:
        out = (-1,)
    if any(v < 0 for v in out):
        raise ConfigError(f"--save-weights-at-updates {text!r}: give non-negative update counts, e.g. 0,500")
    return out


def is_prunable(name: str, t: Tensor) -> bool:
    """Weight matrices and token embedding tables: 2-d float `.weight` tensors other than positional embeddings.

    Biases, LayerNorms and learned positional embeddings stay dense, as in Gale et al. 2019 and Brix et al. 2020.
    """
    return name.endswith(".weight") and t.dim() == 2 and t.is_floating_point() and "embed_positions" not in name


def prunable(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, weight) of every prunable tensor of a model, each once (a tied table once)."""
    return [(n, p) for n, p in model.named_parameters() if is_prunable(n, p)]


def magnitude_masks(state: dict[str, Tensor], names, remaining_ratio: float) -> dict[str, Tensor]:
    """Per-tensor magnitude masks (True = kept) of a state dict, each keeping a remaining_ratio fraction."""
    return {n: keep_largest(state[n].detach().float().abs(), n_pruned(state[n].numel(), remaining_ratio))
            for n in names}


_PRUNERS: "weakref.WeakSet[MagnitudePruner]" = weakref.WeakSet()
_STEP_HOOK = []  # the optimizer-step hook, registered when the first pruner is built (not at import)


class MagnitudePruner(nn.Module):
    """Holds the schedule and current masks of one model. A submodule without parameters or buffers (it adds
    nothing to checkpoints); fairseq's `model.set_num_updates`, called before every training forward, reaches it."""

    def __init__(self, model: nn.Module, remaining_ratio: float, start: int, end: int,
                 save_updates: tuple[int, ...] = (), scope: str = "tensor", save_dir: str | None = None):
        super().__init__()
        self.remaining_ratio, self.start, self.end, self.scope = remaining_ratio, start, end, scope
        self.save_updates, self.save_dir = save_updates, save_dir
        self._targets = tuple(prunable(model)) if remaining_ratio < 1 else ()  # a tuple: not submodules
        # the parameters whose optimizer steps concern this pruner (casts keep the same Parameter objects)
        self._own = frozenset(id(p) for _, p in self._targets) or frozenset(id(p) for p in model.parameters())
        self._keep: dict[str, Tensor] = {}
        self._applied: float | None = None  # the fraction kept the current masks were selected at
        self._update: int | None = None  # the update last pruned for (it may keep everything)
        self._model = weakref.ref(model)
        for name, p in self._targets:
            p.register_hook(lambda g, name=name: self._mask_grad(name, g))
        model.register_state_dict_pre_hook(lambda *_: self._zero_pruned())
        # loaded weights (a resume, a ticket to retrain) bring their own zeros: select the masks again from them
        model.register_load_state_dict_post_hook(lambda *_: self._forget())
        _PRUNERS.add(self)
        if not _STEP_HOOK:
            _STEP_HOOK.append(register_optimizer_step_post_hook(_after_any_step))

    def scheduled(self, num_updates: int) -> float:
        """The fraction of every target kept at this update."""
        return cubic_schedule(self.remaining_ratio, self.start, self.end, num_updates)

    @torch.no_grad()
    def prune(self, num_updates: int) -> None:
        """Prune every target to the fraction scheduled for this update; what was pruned before stays pruned."""
        self._update = num_updates
        k = self.scheduled(num_updates)
        # once pruned, entries rank below every kept one, so the same fraction selects the same masks again:
        # masks are re-selected only when the schedule moves (not on every update after the ramp)
        if k < 1 and self._applied != k:
            mags = {}
            for name, p in self._targets:
                a = p.detach().float().abs()
                prev = self._keep.get(name)
                if prev is not None:  # pruned entries sort below every kept one, whatever their value now
                    a = torch.where(prev.to(a.device), a, -1.0)
                mags[name] = a
            if self.scope == "global":  # one threshold over every target: layers end up with their own fraction
                flat = torch.cat([a.flatten() for a in mags.values()])
                keep = keep_largest(flat, n_pruned(flat.numel(), k)).split([a.numel() for a in mags.values()])
                self._keep = {n: kept.view_as(mags[n]) for n, kept in zip(mags, keep)}
            else:
                self._keep = {n: keep_largest(a, n_pruned(a.numel(), k)) for n, a in mags.items()}
            self._applied = k
        self._zero_pruned()

    def _forget(self) -> None:
        self._keep, self._applied, self._update = {}, None, None

    @torch.no_grad()
    def _zero_pruned(self) -> None:
        for name, p in self._targets:
            keep = self._keep.get(name)
            if keep is not None:
                p.data.masked_fill_(~keep.to(p.device), 0)

    def _mask_grad(self, name: str, grad: Tensor) -> Tensor:
        keep = self._keep.get(name)
        return grad if keep is None else grad.masked_fill(~keep.to(grad.device), 0)

    def set_num_updates(self, num_updates: int) -> None:
        if num_updates in self.save_updates:
            self.save_weights(num_updates)
        self.prune(num_updates)

    def after_step(self, optimizer) -> None:
        """After an optimizer step over this model's weights: zero what moved, prune for the next update, and save
        the weights if the update just done is a rewind point (fairseq tells the model its update count only before
        the next update's forward, which the last update of a run never has)."""
        if self._update is None:
            return
        done = self._update + 1
        if not self._targets and done not in self.save_updates:
            return  # nothing to prune or save: the optimizer's parameters need no look
        if not any(id(p) in self._own for g in optimizer.param_groups for p in g["params"]):
            return
        if self._targets:
            self.prune(done)
        if done in self.save_updates:
            self.save_weights(done)

    def save_weights(self, num_updates: int) -> None:
        """SAVE_DIR/weights_update{N}.pt: the model's state dict after N updates (written once, atomically, by the
        first rank only; a tensor tied to another, an output projection to its embedding table, stored once)."""
        model = self._model()
        if self.save_dir is None or model is None or _rank() != 0:
            return
        path = os.path.join(self.save_dir, f"weights_update{num_updates}.pt")
        if os.path.exists(path):
            return
        sd, copies = {}, {}
        for k, v in model.state_dict().items():
            same = (v.data_ptr(), v.shape, v.stride(), v.dtype)
            if same not in copies:
                copies[same] = v.detach().float().cpu().clone() if v.is_floating_point() else v.cpu()
            sd[k] = copies[same]
        with atomic_path(path) as tmp:
            torch.save({"model": sd, "num_updates": int(num_updates)}, tmp)


def _rank() -> int:
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _after_any_step(optimizer, args, kwargs) -> None:
    for pruner in list(_PRUNERS):
        pruner.after_step(optimizer)


def add_args(parser) -> None:
    """The pruning flags (the pruned_transformer model adds them to fairseq's Transformer ones)."""
    parser.add_argument("--remaining-ratio", type=float, metavar="K",
                        help="gradual magnitude pruning: the fraction of each weight matrix and token embedding "
                             "table kept, in (0, 1] (default 1: no pruning)")
    parser.add_argument("--prune-start-update", type=int, metavar="N",
                        help="update at which pruning starts (default 0)")
    parser.add_argument("--prune-end-update", type=int, metavar="N",
                        help="update from which K is kept (default: the start: prune at once)")
    parser.add_argument("--prune-scope", choices=SCOPES,
                        help="tensor (default: every tensor keeps the scheduled fraction) or global (one magnitude "
                             "threshold over all of them, so each layer finds its own fraction)")
    parser.add_argument("--save-weights-at-updates", metavar="N,N",
                        help="write weights_update{N}.pt after N updates (0: the initialisation), the rewind points "
                             "of lottery tickets")
    parser.add_argument("--save-weights-dir", metavar="DIR",
                        help="where weights_update{N}.pt go (default: --save-dir; fairseq-hydra-train does not hand "
                             "the save directory to models, so Hydra recipes name it)")


def attach(model: nn.Module, args) -> None:
    """Give a dense model a pruner when the pruning flags ask for one (validated here, before training)."""
    k = getattr(args, "remaining_ratio", None)
    save = parse_updates(getattr(args, "save_weights_at_updates", None))
    if k is None:
        for flag in ("prune_start_update", "prune_end_update", "prune_scope"):
            if getattr(args, flag, None) is not None:
                raise ConfigError(f"--{flag.replace('_', '-')} needs --remaining-ratio (the fraction to keep)")
        if not save:
            return
    try:
        k = check_remaining_ratio(1.0 if k is None else k)
    except ValueError as e:
        raise ConfigError(f"--remaining-ratio: {e}") from None
    start = getattr(args, "prune_start_update", None)
    start = 0 if start is None else start
    end = getattr(args, "prune_end_update", None)
    end = start if end is None else end
    if not (isinstance(start, int) and start >= 0):
        raise ConfigError(f"--prune-start-update {start!r} must be a non-negative number of updates")
    if end < start:
        raise ConfigError(f"--prune-end-update {end} precedes --prune-start-update {start}: the schedule must "
                          f"end at or after its start")
    scope = getattr(args, "prune_scope", None) or "tensor"
    if scope not in SCOPES:
        raise ConfigError(f"--prune-scope {scope!r} is unknown; allowed: {', '.join(SCOPES)}")
    save_dir = getattr(args, "save_weights_dir", None) or getattr(args, "save_dir", None)
    if save and not save_dir:
        raise ConfigError("--save-weights-at-updates needs --save-weights-dir (under fairseq-hydra-train: "
                          "+model.save_weights_dir=DIR)")
    model.add_module("magnitude_pruner", MagnitudePruner(model, k, start, end, save, scope, save_dir))


def pruner_of(model: nn.Module) -> "MagnitudePruner | None":
    return next((m for m in model.modules() if isinstance(m, MagnitudePruner)), None)


# ---- lottery tickets -------------------------------------------------------------------------

def make_ticket(final: dict[str, Tensor], rewind: dict[str, Tensor], names, remaining_ratio: float,
                sign_only: bool = False) -> tuple[dict[str, Tensor], dict[str, float]]:
    """Weights to retrain: the rewind point's values under the final model's magnitude masks (Brix et al. 2020).

    With `sign_only`, each kept weight is its rewind sign times one magnitude per tensor, the rewind tensor's
    standard deviation (the scale its init had); returns the new state dict and those magnitudes.
    """
    masks = magnitude_masks(final, names, remaining_ratio)
    out, magnitudes = {k: v.clone() for k, v in rewind.items()}, {}
    for n, keep in masks.items():
        w = rewind[n]
        if sign_only:
            magnitudes[n] = float(w.float().std())
            w = torch.where(w >= 0, magnitudes[n], -magnitudes[n]).to(w.dtype)
        out[n] = torch.where(keep, w, torch.zeros((), dtype=w.dtype))
    return out, magnitudes


def write_ticket(save_dir: str, out: str, remaining_ratio: float, rewind_update: int, sign_only: bool = False,
                 final: str | None = None) -> dict:
    """A fairseq checkpoint holding a lottery ticket of the dense run in `save_dir`, to retrain with the mask fixed:
    `fairseq-train ... --arch pruned_transformer_* --restore-file OUT --reset-optimizer --reset-lr-scheduler
    --reset-dataloader --reset-meters --remaining-ratio K` (the zeros of the ticket are its mask)."""
    try:
        remaining_ratio = check_remaining_ratio(remaining_ratio)
    except ValueError as e:
        raise ConfigError(f"--remaining-ratio: {e}") from None
    final = final or os.path.join(save_dir, "checkpoint_last.pt")
    state = read_checkpoint(final)
    rewind_path = os.path.join(save_dir, f"weights_update{rewind_update}.pt")
    if not os.path.isfile(rewind_path):
        saved = sorted(int(re.search(r"weights_update(\d+)\.pt$", p)[1])
                       for p in glob.glob(os.path.join(save_dir, "weights_update*.pt")))
        raise ConfigError(f"rewind update {rewind_update} was not saved in {save_dir!r} (saved: "
                          f"{', '.join(map(str, saved)) or 'none'}); train the dense model with "
                          f"--save-weights-at-updates {rewind_update}")
    rewind = read_checkpoint(rewind_path, "weight snapshot")["model"]
    if set(rewind) != set(state["model"]):
        raise ConfigError(f"{rewind_path!r} holds other tensors than {final!r}: not the same model")
    names, tied = [], {}  # a table tied to the output projection is one tensor under two names
    for k, v in state["model"].items():
        if is_prunable(k, v):
            first = tied.setdefault(v.data_ptr(), k)
            if first == k:
                names.append(k)
    weights, magnitudes = make_ticket(state["model"], rewind, names, remaining_ratio, sign_only)
    for k, v in state["model"].items():
        if is_prunable(k, v):
            weights[k] = weights[tied[v.data_ptr()]]
    ticket = {"remaining_ratio": remaining_ratio, "rewind_update": int(rewind_update), "sign_only": bool(sign_only),
              "final": os.path.abspath(final), "magnitudes": magnitudes}
    history = dict(state["optimizer_history"][-1], num_updates=0)
    out_state = {**state, "model": {k: weights[k].to(v.dtype) for k, v in state["model"].items()},
                 "optimizer_history": [history], "last_optimizer_state": None,
                 "extra_state": {"train_iterator": {"epoch": 1}}, "lottery_ticket": ticket}
    save(out_state, out)
    kept = sum(int(torch.count_nonzero(weights[n])) for n in names)
    return {**ticket, "out": out, "tensors": len(names), "kept": kept,
            "total": sum(state["model"][n].numel() for n in names)}
