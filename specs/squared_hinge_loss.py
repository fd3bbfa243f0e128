"""Squared hinge loss on labels -1 or 1 (as keras.losses.squared_hinge, elementwise)."""

from generator.spec import Input, Loss, relu

inputs = Input("inputs", doc="The predicted values.")
targets = Input("targets", differentiable=False, doc="The labels, -1 or 1.")

spec = Loss(
    "squared_hinge_loss",
    inputs=[inputs, targets],
    reduction="none",
    broadcast=True,
    doc="Computes the squared hinge loss max(0, 1 - inputs * targets)^2.",
    elementwise=relu(1 - inputs * targets) ** 2,
)
