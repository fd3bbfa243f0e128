"""Noise contrastive alignment, NCA (Chen et al. 2024) on pairs, as TRL's ``DPOTrainer`` with
``loss_type="nca_pair"``: each completion's reward judged on its own, not only their margin."""

from generator.spec import Input, Loss, Param, Sequence, Term, log_sigmoid

chosen = Sequence("chosen_logps", doc="The policy's log-probability of each chosen completion (a sum over its tokens).")
rejected = Sequence("rejected_logps", doc="The policy's log-probability of each rejected completion.")
ref_chosen = Input("ref_chosen_logps", doc="The reference model's log-probability of each chosen completion.")
ref_rejected = Input("ref_rejected_logps", doc="The reference model's log-probability of each rejected completion.")
beta = Param("beta", 0.1, range="(0, inf)", doc="The scale of the rewards.")

chosen_reward = Term("chosen_reward", beta * (chosen - ref_chosen))
rejected_reward = Term("rejected_reward", beta * (rejected - ref_rejected))

spec = Loss(
    "nca_pair_loss",
    inputs=[chosen, rejected, ref_chosen, ref_rejected],
    params=[beta],
    reduction="mean",
    doc="Computes the NCA loss -log sigmoid(w_c) - log sigmoid(-w_c) / 2 - log sigmoid(-w_r) / 2, w the rewards "
        "b (log-ratio over the reference's).",
    elementwise=-log_sigmoid(chosen_reward) - log_sigmoid(-chosen_reward) / 2 - log_sigmoid(-rejected_reward) / 2,
)
