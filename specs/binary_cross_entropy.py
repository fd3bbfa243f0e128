"""Binary cross entropy on logits or probabilities (as mlx.nn.losses.binary_cross_entropy).

One keyword-only option goes beyond MLX: ``label_smoothing`` pulls the
targets towards 1/2, ``targets * (1 - label_smoothing) + label_smoothing / 2`` (as Keras).
"""

from sympy import log

from generator.spec import Flag, Input, Loss, Param, Select, Term, Weights, maximum, softplus

inputs = Input("inputs", doc="The predicted logits (with_logits=True) or probabilities.")
targets = Input("targets", doc="The binary target values in {0, 1}.")
with_logits = Flag("with_logits", True, doc="Whether ``inputs`` are logits.")
label_smoothing = Param(
    "label_smoothing", 0.0, range="[0, 1]", keyword_only=True,
    doc="Label smoothing factor: the targets become ``targets * (1 - label_smoothing) + label_smoothing / 2``.",
)

smoothed = Term("smoothed_targets", targets * (1 - label_smoothing) + label_smoothing / 2)

# On probabilities the logs are clipped at -100, as MLX and PyTorch do.
on_logits = softplus(inputs) - inputs * smoothed
on_probabilities = -(smoothed * maximum(log(inputs), -100) + (1 - smoothed) * maximum(log(1 - inputs), -100))

spec = Loss(
    "binary_cross_entropy",
    inputs=[inputs, targets],
    weights=Weights(),
    params=[with_logits, label_smoothing],
    reduction="mean",
    doc="Computes the binary cross entropy loss.",
    elementwise=Select(with_logits, on_logits, on_probabilities),
    kinks="where a log is clipped at -100 its gradient is 0.",
)
