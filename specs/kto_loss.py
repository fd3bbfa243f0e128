"""Kahneman-Tversky optimisation, KTO (Ethayarajh et al. 2024): unpaired completions, each desirable
or not, against a reference point.

As TRL's ``KTOTrainer.kto_loss`` and Liger's fused linear KTO: each
completion's policy and reference log-probabilities, whether it is desirable
(1) or not (0), and the reference point ``kl`` (TRL's batch estimate of the
KL divergence, clamped at 0 and not differentiated: give it as it is, one
number or one per completion).
"""

from generator.spec import Input, Loss, Param, Sequence, Term, sigmoid

policy = Sequence("policy_logps", doc="The policy's log-probability of each completion (a sum over its tokens).")
ref = Input("ref_logps", doc="The reference model's log-probability of each completion.")
desirable = Input("preference_labels", differentiable=False, doc="1 where the completion is desirable, 0 where not.")
kl = Input("kl", differentiable=False, doc="The reference point: the estimated KL divergence of the policy from the "
                                           "reference (not differentiated).")
beta = Param("beta", 0.1, range="(0, inf)", doc="The scale of the implicit reward.")
desirable_weight = Param("desirable_weight", 1.0, range="[0, inf)", doc="The weight of desirable completions.")
undesirable_weight = Param("undesirable_weight", 1.0, range="[0, inf)", doc="The weight of undesirable completions.")

log_ratio = Term("log_ratio", policy - ref)

spec = Loss(
    "kto_loss",
    inputs=[policy, ref, desirable, kl],
    params=[beta, desirable_weight, undesirable_weight],
    reduction="mean",
    broadcast=True,
    doc="Computes the KTO loss: w_d (1 - sigmoid(b (r - kl))) for a desirable completion, w_u (1 - sigmoid(b (kl - r))) "
        "for an undesirable one, r the policy's log-ratio over the reference's.",
    elementwise=desirable * desirable_weight * (1 - sigmoid(beta * (log_ratio - kl)))
    + (1 - desirable) * undesirable_weight * (1 - sigmoid(beta * (kl - log_ratio))),
)
