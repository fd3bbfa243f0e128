"""Binary cross entropy on logits or probabilities (as mlx.nn.losses.binary_cross_entropy)."""

from sympy import log

from generator.spec import Flag, Input, Loss, Select, Weights, maximum, softplus

inputs = Input("inputs", doc="The predicted logits (with_logits=True) or probabilities.")
targets = Input("targets", doc="The binary target values in {0, 1}.")
with_logits = Flag("with_logits", True, doc="Whether ``inputs`` are logits.")

# On probabilities the logs are clipped at -100, as MLX and PyTorch do.
on_logits = softplus(inputs) - inputs * targets
on_probabilities = -(targets * maximum(log(inputs), -100) + (1 - targets) * maximum(log(1 - inputs), -100))

spec = Loss(
    "binary_cross_entropy",
    inputs=[inputs, targets],
    weights=Weights(),
    params=[with_logits],
    reduction="mean",
    doc="Computes the binary cross entropy loss.",
    elementwise=Select(with_logits, on_logits, on_probabilities),
    kinks="where a log is clipped at -100 its gradient is 0.",
)
