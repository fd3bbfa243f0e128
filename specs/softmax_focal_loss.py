"""Multi-class focal loss on logits (Lin et al. 2017), with a per-class alpha."""

from sympy import exp, log

from generator.spec import ClassTarget, ClassWeights, Gather, Input, LogSumExp, Loss, Param

logits = Input("logits", doc="The unnormalized logits.")
targets = ClassTarget("targets", doc="The target class indices.")
alpha = ClassWeights("alpha", doc="Optional weight (alpha) of each class. Default: ``None``.")
gamma = Param("gamma", 2.0, range="[0, inf)", doc="The focusing exponent on (1 - p_t).")

# log(p_t) and log(1 - p_t) = log(sum of the other classes' softmax), both as log-sum-exps:
# (1 - p_t)^gamma = exp(gamma * log(1 - p_t)) keeps a finite gradient for confident logits and any gamma.
log_p_t = Gather(logits, targets) - LogSumExp(logits)
log_one_minus_p_t = LogSumExp(logits + log(1 - targets)) - LogSumExp(logits)

spec = Loss(
    "softmax_focal_loss",
    inputs=[logits, targets, alpha],
    axis=-1,
    params=[gamma],
    reduction="mean",
    doc="Computes the focal loss -alpha[t] * (1 - p_t)^gamma * log(p_t), p = softmax(logits), t the target class.",
    row=-Gather(alpha, targets) * exp(gamma * log_one_minus_p_t) * log_p_t,
)
