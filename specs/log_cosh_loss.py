"""Log-cosh loss (as mlx.nn.losses.log_cosh_loss), evaluated stably."""

from sympy import cosh, log

from generator.spec import Input, Loss

inputs = Input("inputs", doc="The predicted values.")
targets = Input("targets", doc="The target values.")

spec = Loss(
    "log_cosh_loss",
    inputs=[inputs, targets],
    reduction="none",
    broadcast=True,
    doc="Computes the log cosh loss between inputs and targets.",
    # log(cosh(.)) is rewritten to the stable logcosh: no overflow for large errors.
    elementwise=log(cosh(inputs - targets)),
)
