"""Soft Dice loss between predicted probabilities and binary masks (Milletari et al. 2016)."""

from generator.spec import Input, Loss, Param, RowSum

inputs = Input("inputs", doc="The predicted probabilities.")
targets = Input("targets", doc="The target mask, 0 or 1 (or probabilities).")
smooth = Param("smooth", 1.0, range="[0, inf)", doc="Added to numerator and denominator.")

spec = Loss(
    "binary_dice_loss",
    inputs=[inputs, targets],
    axis=-1,
    params=[smooth],
    reduction="mean",
    doc="Computes 1 - (2 * sum(inputs * targets) + smooth) / (sum(inputs) + sum(targets) + smooth) along the axis. "
    "For multi-class Dice, give per-class probability maps and one-hot targets of shape (N, C, pixels): "
    "reduction='mean' averages over samples and classes.",
    row=1 - (2 * RowSum(inputs * targets) + smooth) / (RowSum(inputs) + RowSum(targets) + smooth),
)
