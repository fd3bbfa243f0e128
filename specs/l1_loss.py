"""L1 loss (as mlx.nn.losses.l1_loss)."""

from sympy import Abs

from generator.spec import Input, Loss

predictions = Input("predictions", doc="The predicted values.")
targets = Input("targets", doc="The target values.")

spec = Loss(
    "l1_loss",
    inputs=[predictions, targets],
    reduction="mean",
    doc="Computes the L1 loss.",
    elementwise=Abs(predictions - targets),
    kinks="at predictions == targets the gradient is 0 (sign(0) = 0, as in MLX).",
)
