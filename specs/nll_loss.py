"""Negative log likelihood at the target class (as mlx.nn.losses.nll_loss)."""

from generator.spec import ClassTarget, Gather, Input, Loss

inputs = Input("inputs", doc="The predicted distribution in log space.")
targets = ClassTarget("targets", doc="The target class indices.")

spec = Loss(
    "nll_loss",
    inputs=[inputs, targets],
    axis=-1,
    reduction="none",
    doc="Computes the negative log likelihood loss.",
    row=-Gather(inputs, targets),
)
