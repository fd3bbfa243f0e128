"""Focal loss on logits for binary or multi-label targets (as torchvision.ops.sigmoid_focal_loss)."""

from sympy import Piecewise, exp

from generator.spec import Input, Loss, Param, Term, log_sigmoid

inputs = Input("inputs", doc="The predicted logits.")
targets = Input("targets", differentiable=False, doc="The binary labels, 0 or 1.")
alpha = Param("alpha", 0.25, range="[-1, 1]",
              doc="Weight of the positive class, (1 - alpha) weighs the negative one; a negative alpha weighs both 1.")
gamma = Param("gamma", 2.0, range="[0, inf)", doc="The focusing exponent on (1 - p_t).")

# With p_t the probability of the true label: -log(p_t) and log(1 - p_t), both from stable log-sigmoids,
# so (1 - p_t)^gamma = exp(gamma * log(1 - p_t)) keeps a finite gradient for confident logits and any gamma.
cross_entropy = Term("cross_entropy", -(targets * log_sigmoid(inputs) + (1 - targets) * log_sigmoid(-inputs)))
log_one_minus_p_t = Term("log_one_minus_p_t", targets * log_sigmoid(-inputs) + (1 - targets) * log_sigmoid(inputs))
alpha_t = Piecewise((alpha * targets + (1 - alpha) * (1 - targets), alpha >= 0), (1, True))

spec = Loss(
    "sigmoid_focal_loss",
    inputs=[inputs, targets],
    params=[alpha, gamma],
    reduction="none",
    doc="Computes the focal loss -alpha_t * (1 - p_t)^gamma * log(p_t) of Lin et al. (2017) on logits.",
    elementwise=alpha_t * exp(gamma * log_one_minus_p_t) * cross_entropy,
)
