"""Crammer-Singer multi-class hinge loss (as optax.losses.multiclass_hinge_loss)."""

from generator.spec import ClassTarget, Gather, Input, Loss, RowMax

scores = Input("scores", doc="The class scores.")
labels = ClassTarget("labels", doc="The target class indices.")

spec = Loss(
    "multiclass_hinge_loss",
    inputs=[scores, labels],
    axis=-1,
    reduction="none",
    doc="Computes the Crammer-Singer hinge loss max_i(scores[i] + 1 - [i == y]) - scores[y].",
    # "labels" in an elementwise expression is the one-hot row of the label: 1 at y, 0 elsewhere
    row=RowMax(scores + 1 - labels) - Gather(scores, labels),
    kinks="where two classes tie for the maximum the gradient is shared equally between them.",
)
