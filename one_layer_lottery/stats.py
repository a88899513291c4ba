"""What a supermask checkpoint holds: trainable scores, unique frozen random weights, mask bits."""


import torch


def state_dict_stats(state: dict[str, torch.Tensor]) -> dict[str, int]:
    """Counts from a model state dict (each shared weight appears once in it)."""
    scores = sum(t.numel() for k, t in state.items() if k.endswith(".scores"))
    frozen = sum(t.numel() for k, t in state.items()
                 if k.endswith(".frozen_weight") or ".shared_layer_weights." in k)
    tables = {t.data_ptr(): t for k, t in state.items()
              if k.endswith(("embed_tokens.weight", "embed_tokens.stored_weight")) and t.dim() == 2}
    pretrained = sum(t.numel() for t in tables.values())  # a table shared by encoder and decoder counts once
    other = sum(t.numel() for k, t in state.items() if t.is_floating_point()) - scores - frozen - pretrained
    return {"scores": scores, "mask_bits": scores, "frozen_random": frozen, "frozen_pretrained": pretrained,
            "other_float": other}


def model_stats(model: torch.nn.Module) -> dict[str, int]:
    return state_dict_stats(model.state_dict())
