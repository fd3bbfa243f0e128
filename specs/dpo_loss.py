"""Direct preference optimisation, DPO (Rafailov et al. 2023), with conservative label smoothing (cDPO).

As TRL's ``DPOTrainer`` with ``loss_type="sigmoid"`` and Liger's fused linear
DPO: the policy's and the reference's log-probabilities of the chosen and the
rejected completion of each prompt; ``linear_dpo_loss`` makes the policy's
from hidden states through the head.
"""

from generator.spec import Input, Loss, Param, Sequence, Term, log_sigmoid

chosen = Sequence("chosen_logps", doc="The policy's log-probability of each chosen completion (a sum over its tokens).")
rejected = Sequence("rejected_logps", doc="The policy's log-probability of each rejected completion.")
ref_chosen = Input("ref_chosen_logps", doc="The reference model's log-probability of each chosen completion.")
ref_rejected = Input("ref_rejected_logps", doc="The reference model's log-probability of each rejected completion.")
beta = Param("beta", 0.1, range="(0, inf)", doc="The inverse temperature of the implicit reward.")
label_smoothing = Param("label_smoothing", 0.0, range="[0, 0.5]",
                        doc="The probability that a preference is flipped (cDPO); 0 is DPO.")

margin = Term("margin", beta * ((chosen - ref_chosen) - (rejected - ref_rejected)))

spec = Loss(
    "dpo_loss",
    inputs=[chosen, rejected, ref_chosen, ref_rejected],
    params=[beta, label_smoothing],
    reduction="mean",
    doc="Computes the DPO loss -(1 - s) log sigmoid(b m) - s log sigmoid(-b m), m the policy's log-ratio "
        "margin over the reference's.",
    elementwise=-(1 - label_smoothing) * log_sigmoid(margin) - label_smoothing * log_sigmoid(-margin),
)
