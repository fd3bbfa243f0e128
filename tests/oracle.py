"""An independent interpretation of a spec's formula, for use as a test oracle.

It walks the SymPy tree of ``loss.formula`` and evaluates it directly with an
array module: numpy in float64 (values and finite differences) or MLX (whose
``mx.grad`` then gives the autodiff of the symbolic form). It shares no code
with the generator's derivation, scheduling or printing.
"""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
import sympy as sp
from sympy.codegen.cfunctions import expm1, log1p

from generator.spec import functions as fn
from generator.spec import vocabulary as S


class _Numpy:
    where = staticmethod(np.where)
    abs = staticmethod(np.abs)
    sign = staticmethod(np.sign)
    exp = staticmethod(np.exp)
    log = staticmethod(np.log)
    tanh = staticmethod(np.tanh)
    cosh = staticmethod(np.cosh)
    sinh = staticmethod(np.sinh)
    sin = staticmethod(np.sin)
    cos = staticmethod(np.cos)
    atan = staticmethod(np.arctan)
    log1p = staticmethod(np.log1p)
    expm1 = staticmethod(np.expm1)
    power = staticmethod(np.power)
    logaddexp = staticmethod(np.logaddexp)
    broadcast_to = staticmethod(np.broadcast_to)

    @staticmethod
    def erf(x):
        return np.vectorize(math.erf)(x)

    @staticmethod
    def sigmoid(x):
        return np.where(x >= 0, 1 / (1 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1 + np.exp(-np.abs(x))))

    @staticmethod
    def reduce(kind, a, axis):
        if kind == "sum":
            return np.sum(a, axis=axis, keepdims=True)
        if kind == "mean":
            return np.mean(a, axis=axis, keepdims=True)
        if kind == "max":
            return np.max(a, axis=axis, keepdims=True)
        m = np.max(a, axis=axis, keepdims=True)
        m = np.where(np.isfinite(m), m, 0.0)  # a row of -inf: log(0) = -inf, not -inf - -inf
        return m + np.log(np.sum(np.exp(a - m), axis=axis, keepdims=True))


class _MLX:
    stop_gradient = staticmethod(mx.stop_gradient)
    where = staticmethod(mx.where)
    abs = staticmethod(mx.abs)
    sign = staticmethod(mx.sign)
    exp = staticmethod(mx.exp)
    log = staticmethod(mx.log)
    tanh = staticmethod(mx.tanh)
    cosh = staticmethod(mx.cosh)
    sinh = staticmethod(mx.sinh)
    sin = staticmethod(mx.sin)
    cos = staticmethod(mx.cos)
    atan = staticmethod(mx.arctan)
    log1p = staticmethod(mx.log1p)
    expm1 = staticmethod(mx.expm1)
    erf = staticmethod(mx.erf)
    sigmoid = staticmethod(mx.sigmoid)
    power = staticmethod(mx.power)
    logaddexp = staticmethod(mx.logaddexp)
    broadcast_to = staticmethod(mx.broadcast_to)

    @staticmethod
    def reduce(kind, a, axis):
        if kind == "max":
            return _MLX.shared_max(a, axis)
        return {"sum": mx.sum, "mean": mx.mean, "logsumexp": mx.logsumexp}[kind](a, axis=axis, keepdims=True)

    @staticmethod
    def shared_max(a, axis):
        """The row's maximum, its derivative shared equally by the elements equal to it (the vocabulary's
        RowMax), written so that MLX differentiates it twice (mx.max's forward mode takes an argmax)."""
        ties = a == mx.stop_gradient(mx.max(a, axis=axis, keepdims=True))
        return mx.sum(mx.where(ties, a, 0), axis=axis, keepdims=True) / mx.sum(ties, axis=axis, keepdims=True)


NUMPY, MLX = _Numpy(), _MLX()


def evaluate(loss, values, xp, axis=None, flags=None):
    """The per-element (or per-row, keepdims) loss for ``values`` {name: array or scalar}.

    Class targets are given as their one-hot (or probability) rows; per-row
    inputs with the reduced axis kept.
    """
    flags = {f.name: f.default for f in loss.flags} | (flags or {})
    full_shape = np.broadcast_shapes(*[
        tuple(values[i.name].shape) for i in loss.inputs
        if isinstance(i, S.ClassTarget) or (isinstance(i, S.Input) and not i.per_row and not isinstance(i, S.ClassWeights))
    ])

    element = [i.name for i in loss.inputs if isinstance(i, S.Input) and not i.per_row
               and not isinstance(i, S.ClassWeights)]

    def relative(values):
        """The element inputs relative to their row's maximum, held constant (as mlx.nn.losses takes logits)."""
        return {**values, **{n: values[n] - xp.stop_gradient(xp.reduce("max", values[n], axis)) for n in element}}

    def gather(e, inner, values):
        """A probability row's expectation of ``inner``, as mlx.nn.losses differentiates it by the row.

        The value is ``sum(t * inner)``; its derivative by ``t`` (MLX differentiates) is that of
        ``inner`` with the logits relative to their row's maximum (a row of probabilities sums to 1):
        what moves with the maximum comes out, once.
        """
        if xp is not MLX:
            return xp.reduce("sum", inner * values[e.args[1].name], axis)
        relative_inner = broadcast(evaluator(relative(values))(e.args[0]))
        moved = xp.reduce("mean", inner - relative_inner, axis)
        return xp.reduce("sum", relative_inner * values[e.args[1].name], axis) + moved

    def broadcast(inner):
        if tuple(getattr(inner, "shape", ())) != tuple(full_shape):
            inner = xp.broadcast_to(inner, full_shape)
        return inner

    def evaluator(values):
        return lambda e: ev(e, values)

    def ev(e, values=values):
        ev_here = evaluator(values)
        return _ev(e, values, ev_here)

    def _ev(e, values, ev):
        if isinstance(e, S.Term):
            return ev(e.definition)
        if isinstance(e, sp.Symbol):
            return values[e.name]
        if isinstance(e, sp.Number) or e in (sp.pi, sp.E):
            return float(e)
        if isinstance(e, fn.Select):
            return ev(e.args[1] if flags[e.args[0].name] else e.args[2])
        if isinstance(e, sp.Add):
            out = ev(e.args[0])
            for a in e.args[1:]:
                out = out + ev(a)
            return out
        if isinstance(e, sp.Mul):
            out = ev(e.args[0])
            for a in e.args[1:]:
                out = out * ev(a)
            return out
        if isinstance(e, sp.Pow):
            base, exponent = ev(e.args[0]), ev(e.args[1])
            if isinstance(base, (int, float)) and isinstance(exponent, (int, float)):
                return float(base) ** exponent
            if isinstance(base, (int, float)):
                return xp.exp(math.log(base) * exponent)
            return xp.power(base, exponent)
        if isinstance(e, sp.ITE):  # a Piecewise SymPy folded into a condition
            return xp.where(ev(e.args[0]), ev(e.args[1]), ev(e.args[2]))
        if isinstance(e, sp.Piecewise):
            *branches, (last, _) = e.args
            out = ev(last)
            for value, cond in reversed(branches):
                out = xp.where(ev(cond), ev(value), out)
            return out
        if isinstance(e, sp.core.relational.Relational):
            lhs, rhs = ev(e.lhs), ev(e.rhs)
            return {"<": lhs < rhs, "<=": lhs <= rhs, ">": lhs > rhs, ">=": lhs >= rhs,
                    "==": lhs == rhs, "!=": lhs != rhs}[e.rel_op]
        if isinstance(e, S._RowReduction):
            inner = broadcast(ev(e.args[0]))
            if e.kind == "gather":
                return gather(e, inner, values)
            return xp.reduce(e.kind, inner, axis)
        name = type(e).__name__
        args = [ev(a) for a in e.args]
        if isinstance(e, fn.logaddexp):
            return xp.logaddexp(*args)
        if isinstance(args[0], (int, float)) and not name.startswith(("sigmoid", "softplus", "logcosh")):
            return float(getattr(math, {"Abs": "fabs", "atan": "atan"}.get(name, name))(*args))
        if isinstance(e, fn.softplus):
            return xp.logaddexp(args[0], 0.0)
        if isinstance(e, fn.logcosh):
            return xp.logaddexp(args[0], -args[0]) - math.log(2.0)
        if isinstance(e, sp.Abs):
            return xp.abs(args[0])
        if isinstance(e, (log1p, expm1)) or name in ("exp", "log", "sign", "tanh", "cosh", "sinh", "sin", "cos",
                                                        "atan", "erf", "sigmoid"):
            return getattr(xp, name)(*args)
        raise NotImplementedError(f"oracle cannot evaluate {name}")

    return ev(loss.formula)


def reference(loss, arrays, params, xp, axis=None, reduction="none", weights=None, flags=None):
    """The loss through the oracle, reduced as ``reduction`` says.

    ``arrays`` holds the public arguments (class targets as integer indices or
    probabilities); ``xp`` is NUMPY (float64) or MLX.
    """
    asarray = (lambda a: np.asarray(a, dtype=np.float64)) if xp is NUMPY else (lambda a: a)
    values = dict(params)
    kept = None  # rows whose class index is not ignore_index
    for item in loss.inputs:
        value = arrays.get(item.name)
        if isinstance(item, S.ClassWeights):
            values[item.name] = 1.0 if value is None else asarray(_along(value, axis, arrays[loss.inputs[0].name].ndim))
        elif isinstance(item, S.ClassTarget):
            logits = arrays[loss.inputs[0].name]
            if value.ndim == logits.ndim:
                values[item.name] = asarray(value)
            else:
                classes = logits.shape[axis]
                index = np.asarray(value) if xp is NUMPY else value
                if item.ignore_index is not None and params.get(item.ignore_index.name) is not None:
                    kept = index != params[item.ignore_index.name]
                positions = _along(np.arange(classes), axis, logits.ndim)
                if xp is NUMPY:
                    values[item.name] = (np.expand_dims(index, axis) == positions).astype(np.float64)
                else:
                    values[item.name] = (mx.expand_dims(index, axis) == mx.array(positions)).astype(mx.float32)
        elif item.per_row:
            values[item.name] = asarray(np.expand_dims(value, axis) if xp is NUMPY else mx.expand_dims(value, axis))
        else:
            values[item.name] = asarray(value)
    out = evaluate(loss, values, xp, axis, flags)
    if loss.kind == "rowwise":
        out = np.squeeze(out, axis) if xp is NUMPY else mx.squeeze(out, axis)
    if kept is not None:  # ignored rows contribute nothing, and 'mean' is over the rows kept
        out = np.where(kept, out, 0.0) if xp is NUMPY else mx.where(kept, out, 0.0)
    if weights is not None:
        out = out * asarray(weights)
    if reduction == "mean" and kept is not None:
        return out.sum() / kept.sum() if xp is NUMPY else mx.sum(out) / mx.sum(kept)
    if reduction == "mean":
        return out.mean() if xp is NUMPY else mx.mean(out)
    if reduction == "sum":
        return out.sum() if xp is NUMPY else mx.sum(out)
    return out


def _along(class_values, axis, ndim):
    """A 1-d array of per-class values laid along the loss axis (row-wise) or the last axis (elementwise)."""
    shape = [1] * ndim
    shape[-1 if axis is None else axis] = -1
    return class_values.reshape(shape)
