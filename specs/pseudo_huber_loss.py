"""Pseudo-Huber loss: a smooth Huber loss (Charbonnier et al. 1994; Hartley and Zisserman 2003)."""

from sympy import sqrt

from generator.spec import Input, Loss, Param, Term

inputs = Input("inputs", doc="The predicted values.")
targets = Input("targets", doc="The target values.")
delta = Param("delta", 1.0, range="(0, inf)", doc="The scale at which the loss turns from quadratic to linear.")

error = Term("error", inputs - targets)

spec = Loss(
    "pseudo_huber_loss",
    inputs=[inputs, targets],
    params=[delta],
    reduction="mean",
    broadcast=True,
    doc="Computes delta^2 * (sqrt(1 + (error / delta)^2) - 1), error = inputs - targets.",
    # the same value written without the cancellation of sqrt(1 + u^2) - 1 for small errors
    elementwise=error**2 / (sqrt(1 + (error / delta) ** 2) + 1),
)
