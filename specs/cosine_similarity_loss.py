"""Cosine similarity along an axis (as mlx.nn.losses.cosine_similarity_loss)."""

from sympy import sqrt

from generator.spec import Input, Loss, Param, RowSum, maximum

x1 = Input("x1", doc="The first set of inputs.")
x2 = Input("x2", doc="The second set of inputs.")
eps = Param("eps", 1e-8, range="(0, inf)", doc="The minimum value of the denominator used for numerical stability.")

spec = Loss(
    "cosine_similarity_loss",
    inputs=[x1, x2],
    axis=1,
    params=[eps],
    reduction="none",
    broadcast=True,
    doc="Computes the cosine similarity between the two inputs.",
    row=RowSum(x1 * x2) / maximum(sqrt(RowSum(x1**2)) * sqrt(RowSum(x2**2)), eps),
    kinks="where ||x1|| * ||x2|| <= eps the denominator is eps and gets no gradient.",
)
