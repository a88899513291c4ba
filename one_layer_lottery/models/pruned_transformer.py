"""The trained-sparse baseline as a registered model: fairseq's dense Transformer with gradual magnitude pruning and
the weight snapshots lottery tickets rewind to (pruning.py). `--arch pruned_transformer` and `pruned_` + every
fairseq `transformer_*` architecture (pruned_transformer_iwslt_de_en, ...) add the pruning flags to fairseq's
Transformer ones; fairseq's own `transformer` is left as it is.
"""

from fairseq.models import ARCH_CONFIG_REGISTRY, ARCH_MODEL_NAME_REGISTRY, register_model, register_model_architecture
from fairseq.models.transformer.transformer_legacy import TransformerModel, base_architecture

from .. import pruning
from ..errors import install_excepthook


@register_model("pruned_transformer")
class PrunedTransformerModel(TransformerModel):
    """fairseq's Transformer whose weights are pruned by magnitude while it trains (and snapshotted on request)."""

    @classmethod
    def add_args(cls, parser):
        super().add_args(parser)
        pruning.add_args(parser)

    @classmethod
    def build_model(cls, args, task):
        install_excepthook()
        model = super().build_model(args, task)
        pruning.attach(model, args)
        return model


register_model_architecture("pruned_transformer", "pruned_transformer")(base_architecture)
for _arch, _model in sorted(ARCH_MODEL_NAME_REGISTRY.items()):
    if _model == "transformer" and _arch != "transformer":
        register_model_architecture("pruned_transformer", f"pruned_{_arch}")(ARCH_CONFIG_REGISTRY[_arch])
