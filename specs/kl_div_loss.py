"""Kullback-Leibler divergence on log probabilities (as mlx.nn.losses.kl_div_loss)."""

from sympy import exp

from generator.spec import Input, Loss, RowSum

inputs = Input("inputs", domain="log_probabilities", doc="Log probabilities for the predicted distribution.")
targets = Input("targets", domain="log_probabilities", doc="Log probabilities for the target distribution.")

spec = Loss(
    "kl_div_loss",
    inputs=[inputs, targets],
    axis=-1,
    reduction="none",
    broadcast=True,
    doc="Computes the Kullback-Leibler divergence loss sum(exp(targets) * (targets - inputs)).",
    row=RowSum(exp(targets) * (targets - inputs)),
)
