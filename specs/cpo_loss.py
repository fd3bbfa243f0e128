"""Contrastive preference optimisation, CPO (Xu et al. 2024): reference-free DPO plus the chosen
completions' negative log-likelihood.

As Liger's fused linear CPO and TRL's ``CPOTrainer`` with
``loss_type="sigmoid"``: ``linear_cpo_loss`` adds ``alpha`` times the chosen
tokens' mean cross entropy (``compute_nll_loss``, on by default).
"""

from generator.spec import Loss, Param, Sequence, Term, log_sigmoid

chosen = Sequence("chosen_logps", doc="The policy's log-probability of each chosen completion (a sum over its tokens).")
rejected = Sequence("rejected_logps", doc="The policy's log-probability of each rejected completion.")
beta = Param("beta", 0.1, range="(0, inf)", doc="The scale of the reward.")
label_smoothing = Param("label_smoothing", 0.0, range="[0, 0.5]",
                        doc="The probability that a preference is flipped.")

margin = Term("margin", beta * (chosen - rejected))

spec = Loss(
    "cpo_loss",
    inputs=[chosen, rejected],
    params=[beta, label_smoothing],
    reduction="mean",
    nll=True,
    doc="Computes the CPO preference loss -(1 - s) log sigmoid(b (c - r)) - s log sigmoid(-b (c - r)).",
    elementwise=-(1 - label_smoothing) * log_sigmoid(margin) - label_smoothing * log_sigmoid(-margin),
)
