"""Tversky loss: Dice with separate weights for false positives and false negatives (Salehi et al. 2017)."""

from generator.spec import Input, Loss, Param, RowSum

inputs = Input("inputs", doc="The predicted probabilities.")
targets = Input("targets", doc="The target mask, 0 or 1 (or probabilities).")
alpha = Param("alpha", 0.5, range="[0, inf)", doc="The weight of false positives.")
beta = Param("beta", 0.5, range="[0, inf)", doc="The weight of false negatives.")
smooth = Param("smooth", 1.0, range="[0, inf)", doc="Added to numerator and denominator.")

true_positives = RowSum(inputs * targets)
false_positives = RowSum(inputs * (1 - targets))
false_negatives = RowSum((1 - inputs) * targets)

spec = Loss(
    "tversky_loss",
    inputs=[inputs, targets],
    axis=-1,
    params=[alpha, beta, smooth],
    reduction="mean",
    doc="Computes 1 - (TP + smooth) / (TP + alpha * FP + beta * FN + smooth) along the axis.",
    row=1 - (true_positives + smooth) / (true_positives + alpha * false_positives + beta * false_negatives + smooth),
)
