"""Margin ranking loss (as mlx.nn.losses.margin_ranking_loss)."""

from generator.spec import Input, Loss, Param, maximum

inputs1 = Input("inputs1", doc="Scores for the first input.")
inputs2 = Input("inputs2", doc="Scores for the second input.")
targets = Input("targets", doc="Labels: 1 if inputs1 should rank higher, -1 if inputs2 should.")
margin = Param("margin", 0.0, doc="The margin by which the scores should be separated.")

spec = Loss(
    "margin_ranking_loss",
    inputs=[inputs1, inputs2, targets],
    params=[margin],
    reduction="none",
    doc="Computes the margin ranking loss max(0, -y * (x1 - x2) + margin).",
    elementwise=maximum(0, -targets * (inputs1 - inputs2) + margin),
    kinks="at -y * (x1 - x2) + margin == 0 the gradient is that of the linear branch (MLX's maximum(0, u) convention).",
)
