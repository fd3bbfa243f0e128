"""Charbonnier loss, a differentiable L1 loss (Charbonnier et al. 1994; as in LapSRN, Lai et al. 2017)."""

from sympy import sqrt

from generator.spec import Input, Loss, Param

inputs = Input("inputs", doc="The predicted values.")
targets = Input("targets", doc="The target values.")
eps = Param("eps", 1e-3, range="(0, inf)", doc="The scale below which the loss is quadratic.")

spec = Loss(
    "charbonnier_loss",
    inputs=[inputs, targets],
    params=[eps],
    reduction="mean",
    broadcast=True,
    doc="Computes sqrt((inputs - targets)^2 + eps^2).",
    elementwise=sqrt((inputs - targets) ** 2 + eps**2),
)
