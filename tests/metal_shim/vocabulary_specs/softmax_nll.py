"""Cross entropy without label smoothing: a log-sum-exp and a gather (used with masked, -inf logits)."""

from generator.spec import ClassTarget, Gather, Input, LogSumExp, Loss

logits = Input("logits", doc="The unnormalized logits; -inf masks a class.")
targets = ClassTarget("targets", doc="The target class of each row.")

spec = Loss(
    "softmax_nll",
    inputs=[logits, targets],
    axis=-1,
    reduction="none",
    doc="logsumexp(logits) - logits[target].",
    row=LogSumExp(logits) - Gather(logits, targets),
)
