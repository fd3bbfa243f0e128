"""DPO's hinge form (SLiC, Zhao et al. 2023), as TRL's ``DPOTrainer`` with ``loss_type="hinge"``."""

from generator.spec import Input, Loss, Param, Sequence, Term, relu

chosen = Sequence("chosen_logps", doc="The policy's log-probability of each chosen completion (a sum over its tokens).")
rejected = Sequence("rejected_logps", doc="The policy's log-probability of each rejected completion.")
ref_chosen = Input("ref_chosen_logps", doc="The reference model's log-probability of each chosen completion.")
ref_rejected = Input("ref_rejected_logps", doc="The reference model's log-probability of each rejected completion.")
beta = Param("beta", 0.1, range="(0, inf)", doc="The scale of the margin (its reciprocal is the hinge's margin).")

margin = Term("margin", beta * ((chosen - ref_chosen) - (rejected - ref_rejected)))

spec = Loss(
    "dpo_hinge_loss",
    inputs=[chosen, rejected, ref_chosen, ref_rejected],
    params=[beta],
    reduction="mean",
    doc="Computes the hinge preference loss max(0, 1 - b m), m the policy's log-ratio margin over the reference's.",
    elementwise=relu(1 - margin),
    kinks="at b m == 1 the gradient is 0 (relu's convention).",
)
