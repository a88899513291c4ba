"""Writes the Hydra configs of this folder from the recipes in DESIGN.md (translation) and Liu et al. 2019's
RoBERTa fine-tuning settings (GLUE: QQP and MNLI, the paper's Figs. 6-7), as Hydra groups: one primary config per
task (iwslt14, wmt14, glue_qqp, glue_mnli: everything but the model) and one group of models per task family
(iwslt14_model/, wmt14_model/, glue_model/: the model and what it changes in the optimizer).

    python configs/generate.py          # rewrite them; tests check the committed files match
    fairseq-hydra-train --config-dir configs --config-name iwslt14 iwslt14_model=standard_wide_pretrained_emb ...

A recipe keeps its one name everywhere (scripts/train.sh iwslt14_one_layer_small_random_emb ...): TASK_MODEL, the
task's primary config with MODEL chosen from its group (scripts/config.sh turns the name into those arguments).

IWSLT14 de-en, 1 GPU (Ott et al. 2018): adam (0.9, 0.98), lr 5e-4, inverse_sqrt, warmup 4000, dropout 0.3,
weight decay 1e-4, label-smoothed CE 0.1, max-tokens 4096, 55 epochs, best checkpoint by valid BLEU (beam 5).
WMT14 en-de, 8 GPUs: lr 1e-3, warmup 4000 from 1e-7, dropout 0.2, max-tokens 4096 per GPU, fp16, 100 epochs,
joined dictionary with all embeddings shared (dense). Supermask recipes follow the authors' commands where they
differ: decoder input/output tables tied (and only those), --clip-norm 0.5 on IWSLT14 (the authors also train
IWSLT14 in fp16; these configs stay fp32 so that they run on any device: add common.fp16=true on a GPU).
"""

import os

HERE = os.path.dirname(os.path.abspath(__file__))
TASKS = {
    "iwslt14": {
        "archs": {"small": "iwslt_de_en", "wide": "iwslt_de_en_wide", "deep": "iwslt_de_en_deep"},
        "dense": {"small": "transformer_iwslt_de_en", "wide": "transformer_iwslt_de_en"},
        "lr": 5e-4, "dropout": 0.3, "weight_decay": 0.0001, "max_epoch": 55, "gpus": 1, "fp16": False,
        "warmup_init_lr": -1, "joined": False,
        "masked_extra": {"clip_norm": 0.5},  # the authors' IWSLT command (its last --clip-norm)
    },
    "wmt14": {
        "archs": {"base": "wmt_en_de", "wider": "wmt_en_de_wider", "deeper": "wmt_en_de_deeper"},
        "dense": {"base": "transformer_wmt_en_de", "wider": "transformer_vaswani_wmt_en_de_big"},
        "lr": 1e-3, "dropout": 0.2, "weight_decay": 0.0, "max_epoch": 100, "gpus": 8, "fp16": True,
        "warmup_init_lr": 1e-7, "joined": True, "masked_extra": {},
    },
}
DENSE_WIDE = {"encoder_embed_dim": 1024, "decoder_embed_dim": 1024, "encoder_ffn_embed_dim": 2048,
              "decoder_ffn_embed_dim": 2048}


def _yaml(d: dict, indent: int = 0) -> str:
    out = []
    for k, v in d.items():
        pad = "  " * indent
        if isinstance(v, dict):
            out.append(f"{pad}{k}:")
            out.append(_yaml(v, indent + 1))
        elif isinstance(v, bool):
            out.append(f"{pad}{k}: {'true' if v else 'false'}")
        elif isinstance(v, list):
            out.append(f"{pad}{k}: [{', '.join(str(x) for x in v)}]")
        else:
            out.append(f"{pad}{k}: {v}")
    return "\n".join(out)


def config(task: str, model: dict, masked: bool) -> dict:
    t = TASKS[task]
    model = {**model, "dropout": t["dropout"]}
    if masked:  # the authors' recipes tie the decoder's input and output tables only, on both tasks
        model["share_decoder_input_output_embed"] = True
    elif t["joined"]:
        model["share_all_embeddings"] = True
    cfg = {
        "common": {"seed": 1, "log_format": "simple", "log_interval": 100, "user_dir": "???", "fp16": t["fp16"]},
        "task": {"_name": "translation", "data": "???", "eval_bleu": True,
                 "eval_bleu_args": "'{\"beam\": 5, \"lenpen\": 1.0, \"max_len_a\": 1.2, \"max_len_b\": 10}'",
                 "eval_bleu_detok": "space", "eval_bleu_remove_bpe": "sentencepiece"},
        "model": model,
        "criterion": {"_name": "label_smoothed_cross_entropy", "label_smoothing": 0.1},
        "optimizer": {"_name": "masked_adam" if masked else "adam", "adam_betas": "(0.9,0.98)",
                      "weight_decay": t["weight_decay"]},
        "lr_scheduler": {"_name": "inverse_sqrt", "warmup_updates": 4000, "warmup_init_lr": t["warmup_init_lr"]},
        "optimization": {"lr": [t["lr"]], "max_epoch": t["max_epoch"], **(t["masked_extra"] if masked else {})},
        "dataset": {"max_tokens": 4096, "required_batch_size_multiple": 1},
        "distributed_training": {"distributed_world_size": t["gpus"]},
        "checkpoint": {"save_dir": "???", "best_checkpoint_metric": "bleu", "maximize_best_checkpoint_metric": True,
                       "no_epoch_checkpoints": not t["joined"]},
    }
    return cfg


def all_configs() -> dict:
    out = {}
    for task, t in TASKS.items():
        for size, dense_arch in t["dense"].items():
            model = {"_name": dense_arch, **(DENSE_WIDE if task == "iwslt14" and size == "wide" else {})}
            out[f"{task}_dense_{size}"] = config(task, model, masked=False)
        for size, suffix in t["archs"].items():
            for variant, prefix in (("one_layer", "one_layer_"), ("standard", "")):
                for emb in ("random_emb", "pretrained_emb"):
                    model = {"_name": f"{prefix}supermask_transformer_{suffix}", "remaining_ratio": 0.5}
                    if emb == "pretrained_emb":
                        model["pretrained_embeddings"] = "???"
                    out[f"{task}_{variant}_{size}_{emb}"] = config(task, model, masked=True)
    return out


# GLUE with RoBERTa (Liu et al. 2019's fine-tuning settings, fairseq's README.glue): the paper's Figs. 6-7
GLUE = {"qqp": {"num_classes": 2, "total_num_update": 113272, "warmup_updates": 28318},
        "mnli": {"num_classes": 3, "total_num_update": 123873, "warmup_updates": 7432}}
GLUE_MODELS = {  # name: (arch, pre-trained embeddings)
    "dense_base": ("roberta_base", False),
    "one_layer_base_random_emb": ("one_layer_supermask_roberta_base", False),
    "one_layer_base_pretrained_emb": ("one_layer_supermask_roberta_base", True),
    "one_layer_large_pretrained_emb": ("one_layer_supermask_roberta_large", True),
    "standard_base_pretrained_emb": ("supermask_roberta_base", True),
}


def glue_config(task: str, arch: str, pretrained: bool) -> dict:
    t, masked = GLUE[task], "supermask" in arch
    model = {"_name": arch, "dropout": 0.1, "attention_dropout": 0.1}
    if masked:
        model["remaining_ratio"] = 0.7  # the paper's best on QQP and MNLI (Figs. 6-7)
        model["layer_score_lr_scale"] = 1.0  # one lr (Liu et al.'s 1e-5) for every score, as the authors' code
    if pretrained:
        model["pretrained_embeddings"] = "???"  # a fairseq RoBERTa checkpoint of the same size (roberta.base/model.pt)
    return {
        "common": {"seed": 1, "log_format": "simple", "log_interval": 100, "user_dir": "???", "fp16": True,
                   "fp16_init_scale": 4, "threshold_loss_scale": 1, "fp16_scale_window": 128},
        "task": {"_name": "sentence_prediction", "data": "???", "num_classes": t["num_classes"], "init_token": 0,
                 "separator_token": 2, "max_positions": 512},
        "model": model,
        "criterion": {"_name": "sentence_prediction"},
        "optimizer": {"_name": "masked_adam" if masked else "adam", "adam_betas": "(0.9,0.98)", "adam_eps": 1e-06,
                      "weight_decay": 0.1},
        "lr_scheduler": {"_name": "polynomial_decay", "warmup_updates": t["warmup_updates"],
                         "total_num_update": t["total_num_update"]},
        "optimization": {"lr": [1e-05], "max_epoch": 10, "max_update": t["total_num_update"], "clip_norm": 0.0},
        "dataset": {"batch_size": 32, "max_tokens": 4400, "required_batch_size_multiple": 1},
        "distributed_training": {"distributed_world_size": 1, "find_unused_parameters": True},
        "checkpoint": {"save_dir": "???", "best_checkpoint_metric": "accuracy", "maximize_best_checkpoint_metric": True,
                       "no_epoch_checkpoints": True},
    }


def glue_configs() -> dict:
    return {f"glue_{task}_{name}": glue_config(task, arch, pre) for task in GLUE
            for name, (arch, pre) in GLUE_MODELS.items()}


GROUPS = {"iwslt14": "iwslt14_model", "wmt14": "wmt14_model", "glue_qqp": "glue_model", "glue_mnli": "glue_model"}
DEFAULT_MODEL = {"iwslt14": "one_layer_small_random_emb", "wmt14": "one_layer_base_random_emb",
                 "glue_qqp": "one_layer_base_random_emb", "glue_mnli": "one_layer_base_random_emb"}
MODEL_PART = {"model": None, "optimizer": ("_name",), "optimization": ("clip_norm",)}  # what a model brings


def recipes() -> dict:
    """Every recipe by its name (TASK_MODEL): (primary config, group, model in the group, the full config)."""
    out = {}
    for name, cfg in {**all_configs(), **glue_configs()}.items():
        task = next(t for t in GROUPS if name.startswith(t + "_"))
        out[name] = (task, GROUPS[task], name[len(task) + 1:], cfg)
    return out


def split(cfg: dict) -> tuple[dict, dict]:
    """(the task's part, the model's part) of a full recipe."""
    task, model = {}, {}
    for section, values in cfg.items():
        keys = MODEL_PART.get(section, ())
        if keys is None:
            model[section] = values
            continue
        task[section] = {k: v for k, v in values.items() if k not in keys}
        if any(k in values for k in keys):
            model[section] = {k: v for k, v in values.items() if k in keys}
    return task, model


def files() -> dict[str, str]:
    """{path under configs/: text} of every generated file."""
    out = {}
    for task, group, choice, cfg in recipes().values():
        task_part, model_part = split(cfg)
        out[f"{group}/{choice}.yaml"] = (f"# @package _global_\n# {group}/{choice}: generated by configs/generate.py; "
                                         f"edit that script, not this file.\n" + _yaml(model_part) + "\n")
        if choice == DEFAULT_MODEL[task]:
            out[f"{task}.yaml"] = (
                f"# {task}: generated by configs/generate.py from the recipes; edit that script, not this file.\n"
                f"# fairseq-hydra-train --config-dir configs --config-name {task} {group}=MODEL task.data=DATA_BIN \\\n"
                f"#     common.user_dir=$PWD/one_layer_lottery checkpoint.save_dir=CKPT_DIR   (MODEL: configs/{group}/)\n"
                + f"defaults:\n  - _self_\n  - {group}: {choice}\n" + _yaml(task_part) + "\n")
    return out


def main() -> None:
    for path, text in files().items():
        os.makedirs(os.path.dirname(os.path.join(HERE, path)), exist_ok=True)
        with open(os.path.join(HERE, path), "w", encoding="utf-8") as f:
            f.write(text)
    print(f"wrote {len(files())} configs to {HERE}")


if __name__ == "__main__":
    main()
