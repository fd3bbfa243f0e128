"""Cross entropy with class indices or probabilities and label smoothing (as mlx.nn.losses.cross_entropy)."""

from generator.spec import ClassTarget, Gather, Input, LogSumExp, Loss, Param, RowMean, Weights

logits = Input("logits", doc="The unnormalized logits.")
targets = ClassTarget(
    "targets", probabilities=True,
    doc="The ground truth: class indices (the logits' shape without ``axis``) or probabilities (the logits' shape).",
)
label_smoothing = Param("label_smoothing", 0.0, range="[0, 1)", doc="Label smoothing factor.")

spec = Loss(
    "cross_entropy",
    inputs=[logits, targets],
    weights=Weights(),
    axis=-1,
    params=[label_smoothing],
    reduction="none",
    doc="Computes the cross entropy loss.",
    row=LogSumExp(logits) - (1 - label_smoothing) * Gather(logits, targets) - label_smoothing * RowMean(logits),
)
