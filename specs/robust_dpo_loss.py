"""Provably robust DPO, rDPO (Chowdhury et al. 2024): an unbiased loss under preferences flipped with a
known probability, as TRL's ``DPOTrainer`` with ``loss_type="robust"``."""

from generator.spec import Input, Loss, Param, Sequence, Term, log_sigmoid

chosen = Sequence("chosen_logps", doc="The policy's log-probability of each chosen completion (a sum over its tokens).")
rejected = Sequence("rejected_logps", doc="The policy's log-probability of each rejected completion.")
ref_chosen = Input("ref_chosen_logps", doc="The reference model's log-probability of each chosen completion.")
ref_rejected = Input("ref_rejected_logps", doc="The reference model's log-probability of each rejected completion.")
beta = Param("beta", 0.1, range="(0, inf)", doc="The inverse temperature of the implicit reward.")

label_smoothing = Param("label_smoothing", 0.0, range="[0, 0.5)",
                        doc="The probability that a preference is flipped.")

margin = Term("margin", beta * ((chosen - ref_chosen) - (rejected - ref_rejected)))

spec = Loss(
    "robust_dpo_loss",
    inputs=[chosen, rejected, ref_chosen, ref_rejected],
    params=[beta, label_smoothing],
    reduction="mean",
    doc="Computes the robust DPO loss (-(1 - s) log sigmoid(m) + s log sigmoid(-m)) / (1 - 2 s), m the scaled "
        "log-ratio margin.",
    elementwise=(-(1 - label_smoothing) * log_sigmoid(margin) + label_smoothing * log_sigmoid(-margin))
    / (1 - 2 * label_smoothing),
)
