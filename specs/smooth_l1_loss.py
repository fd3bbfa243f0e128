"""Smooth L1 loss (as mlx.nn.losses.smooth_l1_loss)."""

from sympy import Abs, Piecewise

from generator.spec import Input, Loss, Param, Term

predictions = Input("predictions", doc="Predicted values.")
targets = Input("targets", doc="Ground truth values.")
beta = Param("beta", 1.0, range="[0, inf)",
             doc="The threshold after which the loss changes from the squared to the absolute difference.")

distance = Term("distance", Abs(predictions - targets))

spec = Loss(
    "smooth_l1_loss",
    inputs=[predictions, targets],
    params=[beta],
    reduction="mean",
    doc="Computes the smooth L1 loss: squared below beta, absolute above.",
    elementwise=Piecewise((distance**2 / (2 * beta), distance < beta), (distance - beta / 2, True)),
    kinks="at |d| == beta the linear branch is taken (slope sign(d), equal to the quadratic's); at d == 0 the gradient is 0.",
)
