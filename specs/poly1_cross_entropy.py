"""Poly-1 cross entropy: cross entropy plus epsilon * (1 - p_t) (Leng et al. 2022; as optax.poly_loss_cross_entropy)."""

from sympy import exp

from generator.spec import ClassTarget, Gather, Input, LogSumExp, Loss, Param, Weights

logits = Input("logits", doc="The unnormalized logits.")
targets = ClassTarget("targets", probabilities=True,
                      doc="The ground truth: class indices or probabilities (the logits' shape).")
epsilon = Param("epsilon", 2.0, range="[-1, inf)", doc="The weight of the first polynomial term, (1 - p_t).")

probability = exp(logits - LogSumExp(logits))

spec = Loss(
    "poly1_cross_entropy",
    inputs=[logits, targets],
    weights=Weights(),
    axis=-1,
    params=[epsilon],
    reduction="mean",
    doc="Computes the Poly-1 loss: cross entropy + epsilon * (1 - p_t), p = softmax(logits).",
    row=LogSumExp(logits) - Gather(logits, targets) + epsilon * Gather(1 - probability, targets),
)
