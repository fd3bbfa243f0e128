"""Generalized Kullback-Leibler divergence (as optax.losses.generalized_kl_divergence)."""

from sympy import Piecewise, exp, log

from generator.spec import Input, Loss, RowSum

log_predictions = Input("log_predictions", domain="log_probabilities",
                        doc="Log probabilities (or log measures) of the predicted distribution.")
targets = Input("targets", doc="The target distribution's probabilities (or measures): non-negative.")

# targets * log(targets) is 0 where targets == 0 (xlogy, as optax)
divergence = Piecewise((targets * log(targets), targets > 0), (0, True)) - targets * log_predictions

spec = Loss(
    "generalized_kl_divergence",
    inputs=[log_predictions, targets],
    axis=-1,
    reduction="none",
    doc="Computes the generalized Kullback-Leibler divergence "
    "sum(targets * (log(targets) - log_predictions) + exp(log_predictions) - targets), "
    "jointly convex in the two distributions (optax's convex_kl_divergence).",
    row=RowSum(divergence + exp(log_predictions) - targets),
    kinks="where targets == 0 the gradient for targets is -log_predictions - 1 (the limit from above is -inf).",
)
