"""Kullback-Leibler divergence, elementwise (as torch.nn.functional.kl_div)."""

from sympy import Piecewise, exp, log

from generator.spec import Flag, Input, Loss, Select

inputs = Input("inputs", domain="log_probabilities", doc="Log probabilities of the predicted distribution.")
targets = Input("targets", doc="The target distribution: probabilities, or log probabilities when ``log_target=True``.")
log_target = Flag("log_target", False, doc="Whether ``targets`` are log probabilities.")

# targets * log(targets) is 0 where targets == 0 (xlogy, as PyTorch).
on_probabilities = Piecewise((targets * log(targets), targets > 0), (0, True)) - targets * inputs
on_log_probabilities = exp(targets) * (targets - inputs)

spec = Loss(
    "kl_div",
    inputs=[inputs, targets],
    params=[log_target],
    reduction="mean",
    doc="Computes the pointwise Kullback-Leibler divergence targets * (log(targets) - inputs). "
    "Sum it over the classes (reduction='sum' / batch size) for torch's 'batchmean'.",
    elementwise=Select(log_target, on_log_probabilities, on_probabilities),
    kinks="where targets == 0 (log_target=False) the loss is -0 * inputs and the gradient for targets is -inputs.",
)
