"""Mean squared error (as mlx.nn.losses.mse_loss)."""

from generator.spec import Input, Loss

predictions = Input("predictions", doc="The predicted values.")
targets = Input("targets", doc="The target values.")

spec = Loss(
    "mse_loss",
    inputs=[predictions, targets],
    reduction="mean",
    doc="Computes the mean squared error loss.",
    elementwise=(predictions - targets) ** 2,
)
