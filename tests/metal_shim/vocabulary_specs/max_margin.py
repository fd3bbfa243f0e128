"""A hinge on the largest logit: RowMax, class indices with an ignore_index, a per-row input."""

from generator.spec import ClassTarget, Gather, Input, Loss, Param, RowMax, relu

ignored = Param("ignored", -100, doc="Rows with this target are ignored.")
scores = Input("scores", doc="The scores of each class.")
labels = ClassTarget("labels", ignore_index=ignored, doc="The target class of each row.")
margin = Input("margin", per_row=True, doc="The margin of each row.")

spec = Loss(
    "max_margin",
    inputs=[scores, labels, margin],
    params=[ignored],
    axis=-1,
    reduction="mean",
    doc="relu(margin + max(scores) - scores[label]).",
    row=relu(margin + RowMax(scores) - Gather(scores, labels)),
)
