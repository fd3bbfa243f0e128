"""Identity preference optimisation, IPO (Azar et al. 2023, eq. 17).

As TRL's ``DPOTrainer`` with ``loss_type="ipo"``: the squared distance of the
policy's log-ratio margin over the reference's from ``1 / (2 beta)``, on each
completion's mean token log-probability (TRL averages them for IPO; give the
reference's averaged too).
"""

from generator.spec import Input, Loss, Param, Sequence, Term

chosen = Sequence("chosen_logps", average=True,
                  doc="The policy's mean token log-probability of each chosen completion.")
rejected = Sequence("rejected_logps", average=True,
                    doc="The policy's mean token log-probability of each rejected completion.")
ref_chosen = Input("ref_chosen_logps", doc="The reference model's mean token log-probability of each chosen completion.")
ref_rejected = Input("ref_rejected_logps",
                     doc="The reference model's mean token log-probability of each rejected completion.")
beta = Param("beta", 0.1, range="(0, inf)", doc="The regularisation: the margin sought is 1 / (2 beta).")

margin = Term("margin", (chosen - ref_chosen) - (rejected - ref_rejected))

spec = Loss(
    "ipo_loss",
    inputs=[chosen, rejected, ref_chosen, ref_rejected],
    params=[beta],
    reduction="mean",
    doc="Computes the IPO loss (m - 1 / (2 b))**2, m the policy's log-ratio margin over the reference's.",
    elementwise=(margin - 1 / (2 * beta)) ** 2,
)
