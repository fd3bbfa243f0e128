"""The variance of each row: a row reduction inside another (two passes over the row), with weights."""

from generator.spec import Input, Loss, RowMean, Weights

x = Input("x", doc="The values.")

spec = Loss(
    "row_variance",
    inputs=[x],
    weights=Weights(),
    axis=-1,
    reduction="mean",
    doc="The variance of each row.",
    row=RowMean((x - RowMean(x)) ** 2),
)
