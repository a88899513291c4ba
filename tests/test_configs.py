"""Every config in configs/ composes as fairseq-hydra-train composes it, and builds its model."""

import os
import shutil
import sys

import pytest
from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "configs"))
import generate

RECIPES = generate.recipes()  # name -> (primary config, group, model, the full recipe)
CONFIGS = sorted(n for n in RECIPES if not n.startswith("glue_")) + ["cpu_tiny"]
GLUE_CONFIGS = sorted(n for n in RECIPES if n.startswith("glue_"))


def test_configs_are_hydra_groups_generated_from_the_recipes():
    """One primary config per task and one group of models per task family (task x model), not a file a pair;
    each recipe composes to exactly its full config."""
    assert len([n for n in RECIPES if not n.startswith("glue_")]) == 28 and len(GLUE_CONFIGS) == 10
    files = generate.files()
    on_disk = {os.path.relpath(os.path.join(d, f), os.path.join(ROOT, "configs"))
               for d, _, fs in os.walk(os.path.join(ROOT, "configs")) for f in fs if f.endswith(".yaml")}
    assert on_disk == set(files) | {"cpu_tiny.yaml"}, "stale or extra configs: run python configs/generate.py"
    for path, text in files.items():
        with open(os.path.join(ROOT, "configs", path), encoding="utf-8") as f:
            assert f.read() == text, f"{path} is stale: run python configs/generate.py"
    assert {p for p in files if "/" not in p} == {"iwslt14.yaml", "wmt14.yaml", "glue_qqp.yaml", "glue_mnli.yaml"}
    for name, (task, group, model, full) in RECIPES.items():
        task_part, model_part = generate.split(full)
        merged = {k: {**task_part.get(k, {}), **model_part.get(k, {})} for k in full}
        assert merged == full, name


def _compose(name, overrides):
    """A recipe composed as fairseq-hydra-train composes it: TASK_MODEL is the task's config with MODEL chosen."""
    from fairseq.dataclass.initialize import add_defaults, hydra_init
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    config_name, choice = name, []
    if name in RECIPES:
        task, group, model, _ = RECIPES[name]
        config_name, choice = task, [f"{group}={model}"]
    GlobalHydra.instance().clear()
    hydra_init(config_name)
    # version_base 1.1: as fairseq-hydra-train composes (and fairseq's own in-process composing expects it)
    with initialize_config_dir(config_dir=os.path.join(ROOT, "configs"), version_base="1.1"):
        cfg = compose(config_name=config_name, overrides=choice + overrides)
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    OmegaConf.set_struct(cfg, True)
    add_defaults(cfg)
    return cfg


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.e2e
def test_config_composes_and_builds(name, tiny_corpus, tmp_path):
    import torch
    from fairseq import tasks, utils

    data = tiny_corpus.bin
    if "wmt14" in name:  # WMT recipes share all embeddings: a joined dictionary
        data = tmp_path / "joined"
        shutil.copytree(tiny_corpus.bin, data)
        joined = "".join((data / f"dict.{lang}.txt").read_text(encoding="utf-8") for lang in ("src", "tgt"))
        seen = dict.fromkeys(line.split(" ")[0] for line in joined.splitlines())
        for lang in ("src", "tgt"):
            (data / f"dict.{lang}.txt").write_text("".join(f"{w} 1\n" for w in seen), encoding="utf-8")
    overrides = [f"task.data={data}", f"common.user_dir={ROOT}/one_layer_lottery",
                 f"checkpoint.save_dir={tmp_path}"]
    if "pretrained_emb" in name:  # tables of the right shape, as when loading a trained checkpoint
        overrides += ["model.pretrained_embeddings=dense.pt", "+model._pretrained_embeddings_in_checkpoint=true"]
    cfg = _compose(name, overrides)
    utils.import_user_module(cfg.common)
    assert cfg.criterion.label_smoothing == 0.1
    if name != "cpu_tiny":  # the recipes of DESIGN.md
        assert cfg.optimization.max_epoch == (55 if "iwslt" in name else 100)
    task = tasks.setup_task(cfg.task)
    with torch.no_grad():
        model = task.build_model(cfg.model)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    if "dense" in name:
        assert cfg.optimizer._name == "adam" and not any(n.endswith(".scores") for n in trainable)
    else:
        assert cfg.optimizer._name == "masked_adam" and all(n.endswith(".scores") for n in trainable)
        assert model.cfg.share_layer_weights == ("one_layer" in name or name == "cpu_tiny")
        assert ("embed_tokens.scores" in " ".join(trainable)) == ("pretrained_emb" not in name)
    if "wmt14" in name:
        assert cfg.common.fp16 and cfg.distributed_training.distributed_world_size == 8
        assert model.encoder.embed_tokens is model.decoder.embed_tokens or "dense" not in name


@pytest.mark.parametrize("name", GLUE_CONFIGS)
@pytest.mark.e2e
def test_glue_config_composes_and_builds(name, tiny_glue, tmp_path):
    import torch
    from fairseq import tasks, utils

    overrides = [f"task.data={tiny_glue}", f"common.user_dir={ROOT}/one_layer_lottery", f"checkpoint.save_dir={tmp_path}"]
    if "pretrained_emb" in name:  # tables of the right shape, as when loading a trained checkpoint
        overrides += ["model.pretrained_embeddings=roberta.pt", "+model._pretrained_embeddings_in_checkpoint=true"]
    cfg = _compose(name, overrides)
    utils.import_user_module(cfg.common)
    assert cfg.optimization.lr == [1e-05] and cfg.lr_scheduler._name == "polynomial_decay"  # Liu et al. 2019
    assert cfg.task.num_classes == (3 if "mnli" in name else 2)
    if "qqp" in name:
        return  # the same models as MNLI's: composed, not built again
    task = tasks.setup_task(cfg.task)
    with torch.no_grad():
        model = task.build_model(cfg.model)
    layers, dim = (24, 1024) if "large" in name else (12, 768)
    assert len(model.encoder.sentence_encoder.layers) == layers and model.args.encoder_embed_dim == dim
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    if "dense" in name:
        assert cfg.optimizer._name == "adam"
        return
    assert cfg.optimizer._name == "masked_adam" and model.args.remaining_ratio == 0.7
    assert {n for n in trainable if not n.endswith(".scores")} == {
        f"classification_heads.sentence_classification_head.{m}.{w}" for m in ("dense", "out_proj")
        for w in ("weight", "bias")}
    assert model.args.share_layer_weights == ("one_layer" in name)
    assert ("embed_tokens.scores" in " ".join(trainable)) == ("pretrained_emb" not in name)
