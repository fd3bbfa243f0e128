"""Negative log likelihood at the target class (as mlx.nn.losses.nll_loss), with PyTorch's ``ignore_index``."""

from generator.spec import ClassTarget, Gather, Input, Loss, Param

ignore_index = Param(
    "ignore_index", None, integer=True, keyword_only=True,
    doc="A class index whose rows contribute nothing (their loss and gradient are 0); "
        "``'mean'`` then divides by the rows kept.",
)
inputs = Input("inputs", domain="log_probabilities", doc="The predicted distribution in log space.")
targets = ClassTarget("targets", ignore_index=ignore_index, doc="The target class indices.")

spec = Loss(
    "nll_loss",
    inputs=[inputs, targets],
    axis=-1,
    params=[ignore_index],
    reduction="none",
    doc="Computes the negative log likelihood loss.",
    row=-Gather(inputs, targets),
)
