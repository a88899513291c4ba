"""`one-layer-lottery classify`: a sentence classifier's predictions on a labelled split, through stock fairseq
loading (`checkpoint_utils.load_model_ensemble_and_task`), with accuracy, F1 and the majority-class baseline."""

from collections import Counter

import torch

from .errors import ConfigError


def predict(checkpoint: str, data: str, split: str = "valid", head: str = "sentence_classification_head",
            max_sentences: int = 64) -> tuple[list[str], list[str]]:
    """(predicted labels, gold labels) of every example of `split`, as label strings, in dataset order."""
    from fairseq import checkpoint_utils

    from .io import read_checkpoint

    read_checkpoint(checkpoint)  # one clear line for a missing or unreadable file
    models, _, task = checkpoint_utils.load_model_ensemble_and_task([checkpoint], arg_overrides={"data": data})
    model = models[0].eval()
    if head not in getattr(model, "classification_heads", {}):
        raise ConfigError(f"{checkpoint!r} has no classification head {head!r}: not a sentence classifier")
    try:
        task.load_dataset(split)
    except FileNotFoundError as e:
        raise ConfigError(f"split {split!r} of {data!r}: {e}") from None
    labels = task.label_dictionary
    itr = task.get_batch_iterator(dataset=task.dataset(split), max_sentences=max_sentences,
                                  max_positions=model.max_positions(), ignore_invalid_inputs=False, num_workers=0)
    out = {}
    with torch.no_grad():
        for sample in itr.next_epoch_itr(shuffle=False):
            logits = model(**sample["net_input"], features_only=True, classification_head_name=head)[0]
            for i, p, t in zip(sample["id"].tolist(), logits.argmax(-1).tolist(), sample["target"].view(-1).tolist()):
                out[i] = (labels[p + labels.nspecial], labels[t + labels.nspecial])
    order = sorted(out)
    return [out[i][0] for i in order], [out[i][1] for i in order]


def scores(pred: list[str], gold: list[str], positive: str = "1") -> dict:
    """Accuracy, F1 of the positive class (GLUE's MRPC/QQP metric) and the majority-class accuracy."""
    n = len(gold)
    correct = sum(p == g for p, g in zip(pred, gold))
    tp = sum(p == g == positive for p, g in zip(pred, gold))
    fp = sum(p == positive != g for p, g in zip(pred, gold))
    fn = sum(g == positive != p for p, g in zip(pred, gold))
    majority = Counter(gold).most_common(1)[0] if gold else ("", 0)
    return {"examples": n, "accuracy": round(100 * correct / n, 2) if n else None,
            "f1": round(100 * 2 * tp / (2 * tp + fp + fn), 2) if tp + fp + fn else 0.0,
            "majority_label": majority[0], "majority_accuracy": round(100 * majority[1] / n, 2) if n else None}
