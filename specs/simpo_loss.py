"""Simple preference optimisation, SimPO (Meng et al. 2024): reference-free, on length-normalised
log-probabilities, with a target margin.

As Liger's fused linear SimPO and TRL's ``CPOTrainer`` with
``loss_type="simpo"`` (there ``simpo_gamma``), with label smoothing as TRL's.
"""

from generator.spec import Loss, Param, Sequence, Term, log_sigmoid

chosen = Sequence("chosen_logps", average=True,
                  doc="The policy's mean token log-probability of each chosen completion.")
rejected = Sequence("rejected_logps", average=True,
                    doc="The policy's mean token log-probability of each rejected completion.")
beta = Param("beta", 0.1, range="(0, inf)", doc="The scale of the reward.")
gamma = Param("gamma", 0.5, doc="The target reward margin.")
label_smoothing = Param("label_smoothing", 0.0, range="[0, 0.5]",
                        doc="The probability that a preference is flipped; 0 is SimPO.")

margin = Term("margin", beta * (chosen - rejected) - gamma)

spec = Loss(
    "simpo_loss",
    inputs=[chosen, rejected],
    params=[beta, gamma, label_smoothing],
    reduction="mean",
    doc="Computes the SimPO loss -(1 - s) log sigmoid(m) - s log sigmoid(-m), m = b (c - r) - gamma on mean "
        "token log-probabilities.",
    elementwise=-(1 - label_smoothing) * log_sigmoid(margin) - label_smoothing * log_sigmoid(-margin),
)
