"""Multi-class perceptron loss (as optax.losses.multiclass_perceptron_loss)."""

from generator.spec import ClassTarget, Gather, Input, Loss, RowMax

scores = Input("scores", doc="The class scores.")
labels = ClassTarget("labels", doc="The target class indices.")

spec = Loss(
    "multiclass_perceptron_loss",
    inputs=[scores, labels],
    axis=-1,
    reduction="none",
    doc="Computes the multi-class perceptron loss max_i(scores[i]) - scores[y].",
    row=RowMax(scores) - Gather(scores, labels),
    kinks="where two classes tie for the maximum the gradient is shared equally between them.",
)
