"""Tweedie deviance for compound Poisson-gamma models, 1 < power < 2 (as sklearn's mean_tweedie_deviance)."""

from generator.spec import Input, Loss, Param

inputs = Input("inputs", doc="The predicted means, > 0.")
targets = Input("targets", differentiable=False, doc="The observed values, >= 0.")
power = Param("power", 1.5, range="(1, 2)", doc="The Tweedie power: variance = mean^power.")

spec = Loss(
    "tweedie_deviance",
    inputs=[inputs, targets],
    params=[power],
    reduction="mean",
    doc="Computes the unit deviance 2 * (y^(2-p) / ((1-p)(2-p)) - y * mu^(1-p) / (1-p) + mu^(2-p) / (2-p)).",
    elementwise=2 * (targets ** (2 - power) / ((1 - power) * (2 - power))
                     - targets * inputs ** (1 - power) / (1 - power)
                     + inputs ** (2 - power) / (2 - power)),
)
