"""Multi-class hinge loss (as torch.nn.functional.multi_margin_loss)."""

from generator.spec import ClassTarget, ClassWeights, Gather, Input, Loss, Param, RowMean, relu

inputs = Input("inputs", doc="The class scores.")
targets = ClassTarget("targets", doc="The target class indices.")
weight = ClassWeights("weight", doc="Optional weight of each class, applied to the rows of that target class. Default: ``None``.")
p = Param("p", 1, range="[1, 2]", doc="The power of each hinge: 1 or 2.")
margin = Param("margin", 1.0, doc="The margin by which the target score should beat every other score.")

# Every class i other than the target y adds max(0, margin - x_y + x_i)^p; "1 - targets" is 0 at y.
hinges = (1 - targets) * relu(margin - Gather(inputs, targets) + inputs) ** p

spec = Loss(
    "multi_margin_loss",
    inputs=[inputs, targets, weight],
    axis=-1,
    params=[p, margin],
    reduction="mean",
    doc="Computes the multi-class margin loss weight[y] * mean_i max(0, margin - x[y] + x[i])^p over the classes i != y.",
    row=Gather(weight, targets) * RowMean(hinges),
    kinks="where margin - x[y] + x[i] == 0 the hinge's gradient is 0.",
)
