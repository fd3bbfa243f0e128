"""Hinge loss (as mlx.nn.losses.hinge_loss)."""

from generator.spec import Input, Loss, relu

inputs = Input("inputs", doc="The predicted values.")
targets = Input("targets", doc="The target values. They should be -1 or 1.")

spec = Loss(
    "hinge_loss",
    inputs=[inputs, targets],
    reduction="none",
    broadcast=True,
    doc="Computes the hinge loss between inputs and targets.",
    elementwise=relu(1 - inputs * targets),
    kinks="at inputs * targets == 1 the gradient is 0 (MLX's maximum(u, 0) convention).",
)
