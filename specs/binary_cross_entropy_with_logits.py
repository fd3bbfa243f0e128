"""Binary cross entropy on logits with a positive-class weight (as torch.nn.functional.binary_cross_entropy_with_logits)."""

from generator.spec import ClassWeights, Input, Loss, Weights, log_sigmoid

inputs = Input("inputs", doc="The predicted logits.")
targets = Input("targets", doc="The targets: 0 or 1, or probabilities.")
pos_weight = ClassWeights(
    "pos_weight", keyword_only=True,
    doc="Optional weight of the positive term for each class (the last axis). Default: ``None``.",
)

spec = Loss(
    "binary_cross_entropy_with_logits",
    inputs=[inputs, targets, pos_weight],
    weights=Weights("weight", doc="Optional weight of each loss element. Default: ``None``."),
    reduction="mean",
    doc="Computes the binary cross entropy on logits -[pos_weight * y * log(sigmoid(x)) + (1 - y) * log(1 - sigmoid(x))].",
    elementwise=-(pos_weight * targets * log_sigmoid(inputs) + (1 - targets) * log_sigmoid(-inputs)),
)
