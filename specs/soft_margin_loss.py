"""Two-class logistic loss on labels -1 or 1 (as torch.nn.functional.soft_margin_loss)."""

from generator.spec import Input, Loss, softplus

inputs = Input("inputs", doc="The predicted scores.")
targets = Input("targets", differentiable=False, doc="The labels, -1 or 1.")

spec = Loss(
    "soft_margin_loss",
    inputs=[inputs, targets],
    reduction="mean",
    doc="Computes the soft margin loss log(1 + exp(-targets * inputs)).",
    elementwise=softplus(-targets * inputs),
)
