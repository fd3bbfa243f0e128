"""Self-play preference optimisation with hard probabilities, SPPO (Wu et al. 2024, eq. 4.7 with the
winner's probability 1): each log-ratio driven to +-1/(2 beta); as TRL's ``DPOTrainer`` with
``loss_type="sppo_hard"``."""

from generator.spec import Input, Loss, Param, Sequence

chosen = Sequence("chosen_logps", doc="The policy's log-probability of each chosen completion (a sum over its tokens).")
rejected = Sequence("rejected_logps", doc="The policy's log-probability of each rejected completion.")
ref_chosen = Input("ref_chosen_logps", doc="The reference model's log-probability of each chosen completion.")
ref_rejected = Input("ref_rejected_logps", doc="The reference model's log-probability of each rejected completion.")
beta = Param("beta", 0.1, range="(0, inf)", doc="The regularisation: the log-ratios sought are +-1 / (2 beta).")

spec = Loss(
    "sppo_hard_loss",
    inputs=[chosen, rejected, ref_chosen, ref_rejected],
    params=[beta],
    reduction="mean",
    doc="Computes the SPPO (hard) loss (r_c - 1 / (2 b))**2 + (r_r + 1 / (2 b))**2, r the policy's log-ratio "
        "over the reference's.",
    elementwise=((chosen - ref_chosen) - 1 / (2 * beta)) ** 2 + ((rejected - ref_rejected) + 1 / (2 * beta)) ** 2,
)
