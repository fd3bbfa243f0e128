"""Cross entropy with class indices or probabilities and label smoothing (as mlx.nn.losses.cross_entropy).

Two keyword-only options go beyond MLX: ``ignore_index`` (as in PyTorch) and
the z-loss ``lse_square_scale * logsumexp(logits)**2`` (as in PaLM).
"""

from generator.spec import ClassTarget, Gather, Input, LogSumExp, Loss, Param, RowMean, Weights

ignore_index = Param(
    "ignore_index", None, integer=True, keyword_only=True,
    doc="A class index whose rows contribute nothing (their loss and gradient are 0); "
        "``'mean'`` then divides by the rows kept. Only for class-index targets.",
)
logits = Input("logits", doc="The unnormalized logits.")
targets = ClassTarget(
    "targets", probabilities=True, ignore_index=ignore_index,
    doc="The ground truth: class indices (the logits' shape without ``axis``) or probabilities (the logits' shape).",
)
label_smoothing = Param("label_smoothing", 0.0, range="[0, 1)", doc="Label smoothing factor.")
lse_square_scale = Param(
    "lse_square_scale", 0.0, range="[0, inf)", keyword_only=True,
    doc="Weight of the z-loss ``logsumexp(logits)**2`` added to each row.",
)

log_normalizer = LogSumExp(logits)

spec = Loss(
    "cross_entropy",
    inputs=[logits, targets],
    weights=Weights(),
    axis=-1,
    params=[label_smoothing, ignore_index, lse_square_scale],
    reduction="none",
    doc="Computes the cross entropy loss.",
    row=log_normalizer - (1 - label_smoothing) * Gather(logits, targets) - label_smoothing * RowMean(logits)
    + lse_square_scale * log_normalizer**2,
)
