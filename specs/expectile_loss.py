"""Expectile (asymmetric least squares) loss (Newey and Powell 1987)."""

from sympy import Piecewise

from generator.spec import Input, Loss, Param, Term

inputs = Input("inputs", doc="The predicted expectiles.")
targets = Input("targets", doc="The target values.")
tau = Param("tau", 0.5, range="[0, 1]", doc="The expectile to estimate.")

error = Term("error", targets - inputs)

spec = Loss(
    "expectile_loss",
    inputs=[inputs, targets],
    params=[tau],
    reduction="mean",
    broadcast=True,
    doc="Computes the expectile loss |tau - 1(targets < inputs)| * (targets - inputs)^2.",
    elementwise=Piecewise((tau * error**2, error >= 0), ((1 - tau) * error**2, True)),
)
