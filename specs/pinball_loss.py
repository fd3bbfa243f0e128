"""Quantile (pinball) loss (Koenker and Bassett 1978; as tfa.losses.pinball_loss)."""

from generator.spec import Input, Loss, Param, Term, maximum

inputs = Input("inputs", doc="The predicted quantiles.")
targets = Input("targets", doc="The target values.")
tau = Param("tau", 0.5, range="[0, 1]", doc="The quantile to estimate.")

error = Term("error", targets - inputs)

spec = Loss(
    "pinball_loss",
    inputs=[inputs, targets],
    params=[tau],
    reduction="mean",
    broadcast=True,
    doc="Computes the pinball loss max(tau * (targets - inputs), (tau - 1) * (targets - inputs)).",
    elementwise=maximum(tau * error, (tau - 1) * error),
    kinks="at inputs == targets the gradient is that of (tau - 1) * (targets - inputs).",
)
