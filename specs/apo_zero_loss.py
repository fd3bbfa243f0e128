"""Anchored preference optimisation, APO-zero (D'Oosterlinck et al. 2024, eq. 7): raise the chosen
completion's likelihood and lower the rejected one's, each against the reference; as TRL's
``DPOTrainer`` with ``loss_type="apo_zero"`` (chosen outputs better than the model's own)."""

from generator.spec import Input, Loss, Param, Sequence, Term, sigmoid

chosen = Sequence("chosen_logps", doc="The policy's log-probability of each chosen completion (a sum over its tokens).")
rejected = Sequence("rejected_logps", doc="The policy's log-probability of each rejected completion.")
ref_chosen = Input("ref_chosen_logps", doc="The reference model's log-probability of each chosen completion.")
ref_rejected = Input("ref_rejected_logps", doc="The reference model's log-probability of each rejected completion.")
beta = Param("beta", 0.1, range="(0, inf)", doc="The scale of the log-ratios.")

chosen_ratio = Term("chosen_ratio", chosen - ref_chosen)
rejected_ratio = Term("rejected_ratio", rejected - ref_rejected)

spec = Loss(
    "apo_zero_loss",
    inputs=[chosen, rejected, ref_chosen, ref_rejected],
    params=[beta],
    reduction="mean",
    doc="Computes the APO-zero loss 1 - sigmoid(b r_c) + sigmoid(b r_r), r the policy's log-ratio over the "
        "reference's.",
    elementwise=1 - sigmoid(beta * chosen_ratio) + sigmoid(beta * rejected_ratio),
)
