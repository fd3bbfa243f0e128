"""Poisson negative log likelihood (as torch.nn.functional.poisson_nll_loss)."""

from sympy import Piecewise, exp, log, pi

from generator.spec import Flag, Input, Loss, Param, Select, Term

inputs = Input("inputs", doc="The expectation of the Poisson distribution: its log (log_input=True) or itself.")
targets = Input("targets", doc="Samples from the Poisson distribution (counts).")
log_input = Flag("log_input", True, doc="Whether ``inputs`` is the log of the expectation.")
full = Flag("full", False, doc="Whether to add the Stirling approximation of log(targets!).")
eps = Param("eps", 1e-8, range="(0, inf)", doc="Added to ``inputs`` before the log when ``log_input=False``.")

# log(targets!) ~ targets*log(targets) - targets + log(2*pi*targets)/2, used for targets > 1 only (as PyTorch).
stirling = Term("stirling", targets * log(targets) - targets + log(2 * pi * targets) / 2)

spec = Loss(
    "poisson_nll_loss",
    inputs=[inputs, targets],
    params=[log_input, full, eps],
    reduction="mean",
    doc="Computes the negative log likelihood loss of a Poisson distribution.",
    elementwise=Select(log_input, exp(inputs) - targets * inputs, inputs - targets * log(inputs + eps))
    + Select(full, Piecewise((stirling, targets > 1), (0, True)), 0),
)
