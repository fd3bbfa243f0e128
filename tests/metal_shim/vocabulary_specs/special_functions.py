"""An elementwise loss using the functions no mlx.nn loss needs (erf, log1p, expm1, atan, ...)."""

from sympy import Abs, atan, cos, erf, exp, sign, sinh, sqrt, tanh
from sympy.codegen.cfunctions import expm1, log1p

from generator.spec import Flag, Input, Loss, Param, Select, logcosh, sigmoid, softplus

x = Input("x", doc="The inputs.")
y = Input("y", differentiable=False, doc="The targets (no gradient).")
scale = Param("scale", 0.5, range="(0, inf)", doc="A positive scale.")
smooth = Flag("smooth", True, doc="Whether to add the smooth terms.")

spec = Loss(
    "special_functions",
    inputs=[x, y],
    params=[scale, smooth],
    reduction="sum",
    doc="A sum of special functions of x and y.",
    elementwise=erf(scale * x) * y + log1p(x**2) + expm1(-Abs(y)) * atan(x) + sinh(x / 3) * cos(x) * sign(y)
    + Select(smooth, softplus(x) * sigmoid(y) + logcosh(x - y) + sqrt(1 + x**2) * tanh(y), exp(-x**2) * Abs(x) ** (1 + scale)),
)
