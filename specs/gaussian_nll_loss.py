"""Gaussian negative log likelihood (as mlx.nn.losses.gaussian_nll_loss)."""

from sympy import log, pi

from generator.spec import Flag, Input, Loss, Param, Select, Term, maximum

inputs = Input("inputs", doc="The predicted expectation of the Gaussian distribution.")
targets = Input("targets", doc="The target values (samples from the Gaussian distribution).")
variances = Input("vars", doc="The predicted variance of the Gaussian distribution.")
full = Flag("full", False, doc="Whether to include the constant term in the loss calculation.")
eps = Param("eps", 1e-6, range="(0, inf)", doc="Small positive constant for numerical stability.")

variance = Term("variance", maximum(variances, eps))

spec = Loss(
    "gaussian_nll_loss",
    inputs=[inputs, targets, variances],
    params=[full, eps],
    reduction="mean",
    doc="Computes the negative log likelihood loss for a Gaussian distribution.",
    elementwise=(log(variance) + (targets - inputs) ** 2 / variance) / 2 + Select(full, log(2 * pi) / 2, 0),
    kinks="where vars <= eps the variance is clamped to eps and its gradient is 0.",
)
