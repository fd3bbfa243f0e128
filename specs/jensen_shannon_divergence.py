"""Generalized Jensen-Shannon divergence between two distributions given as log probabilities."""

from sympy import exp, log

from generator.spec import Input, Loss, Param, RowSum, Term, logaddexp

inputs = Input("inputs", domain="log_probabilities", doc="Log probabilities of the predicted distribution Q.")
targets = Input("targets", domain="log_probabilities", doc="Log probabilities of the target distribution P.")
beta = Param("beta", 0.5, range="(0, 1)", doc="The weight of P in the mixture M = beta * P + (1 - beta) * Q.")

log_mixture = Term("log_mixture", logaddexp(targets + log(beta), inputs + log(1 - beta)))

spec = Loss(
    "jensen_shannon_divergence",
    inputs=[inputs, targets],
    axis=-1,
    params=[beta],
    reduction="mean",
    broadcast=True,
    doc="Computes beta * KL(P || M) + (1 - beta) * KL(Q || M) with M = beta * P + (1 - beta) * Q.",
    row=beta * RowSum(exp(targets) * (targets - log_mixture))
    + (1 - beta) * RowSum(exp(inputs) * (inputs - log_mixture)),
)
