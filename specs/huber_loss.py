"""Huber loss: quadratic near zero, linear beyond delta (as mlx.nn.losses.huber_loss)."""

from sympy import Abs, Piecewise

from generator.spec import Input, Loss, Param, Term

inputs = Input("inputs", doc="The predicted values.")
targets = Input("targets", doc="The target values.")
delta = Param("delta", 1.0, range="(0, inf)", doc="The threshold at which to change between L1 and L2 loss.")

error = Term("error", inputs - targets)

spec = Loss(
    "huber_loss",
    inputs=[inputs, targets],
    params=[delta],
    reduction="none",
    broadcast=True,
    doc="Computes the Huber loss between inputs and targets.",
    elementwise=Piecewise((error**2 / 2, Abs(error) <= delta), (delta * (Abs(error) - delta / 2), True)),
    kinks="at |error| == delta both branches have slope delta*sign(error); at error == 0 the gradient is 0.",
)
