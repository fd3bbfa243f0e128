"""Multi-label one-versus-all logistic loss (as torch.nn.functional.multilabel_soft_margin_loss)."""

from generator.spec import ClassWeights, Input, Loss, RowMean, log_sigmoid

inputs = Input("inputs", doc="The class scores (logits).")
targets = Input("targets", doc="The labels of each class, 0 or 1 (or probabilities).")
weight = ClassWeights("weight", doc="Optional weight of each class. Default: ``None``.")

spec = Loss(
    "multilabel_soft_margin_loss",
    inputs=[inputs, targets, weight],
    axis=-1,
    reduction="mean",
    doc="Computes the multi-label soft margin loss: the class-averaged binary cross entropy on logits.",
    row=-RowMean(weight * (targets * log_sigmoid(inputs) + (1 - targets) * log_sigmoid(-inputs))),
)
