"""Odds ratio preference optimisation, ORPO (Hong et al. 2024): the log odds ratio of the chosen
completion over the rejected one, on mean token log-probabilities.

As TRL's ``ORPOTrainer.odds_ratio_loss`` (its ``losses``, negated) and
Liger's fused linear ORPO: ``linear_orpo_loss`` adds the chosen tokens' mean
cross entropy (``compute_nll_loss``, on by default), the SFT term.
"""

import sympy as sp
from sympy.codegen.cfunctions import expm1, log1p

from generator.spec import Loss, Param, Sequence, Term, log_sigmoid

chosen = Sequence("chosen_logps", average=True,
                  doc="The policy's mean token log-probability of each chosen completion (at most 0).")
rejected = Sequence("rejected_logps", average=True,
                    doc="The policy's mean token log-probability of each rejected completion (at most 0).")
beta = Param("beta", 0.1, range="(0, inf)", doc="The weight of the odds ratio term.")


def log1mexp(x):
    """log(1 - exp(x)) for x <= 0, each side of -log 2 in its accurate form (Maechler 2012)."""
    return sp.Piecewise((sp.log(-expm1(x)), x > -sp.log(2)), (log1p(-sp.exp(x)), True))


log_odds = Term("log_odds", (chosen - rejected) - (log1mexp(chosen) - log1mexp(rejected)))

spec = Loss(
    "orpo_loss",
    inputs=[chosen, rejected],
    params=[beta],
    reduction="mean",
    nll=True,
    doc="Computes the ORPO odds ratio loss -b log sigmoid(log odds(c) - log odds(r)), odds(p) = p / (1 - p), "
        "on mean token log-probabilities.",
    elementwise=-beta * log_sigmoid(log_odds),
)
