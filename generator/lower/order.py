"""The order in which every backend adds up a sum and multiplies out a product: the same rounding.

Float arithmetic is not associative: ``1e30 + 1 - 1e30`` is 0 where
``1e30 - 1e30 + 1`` is 1, and ``t * x**-1.5`` underflows where ``t / x**1.5``
overflows; an infinite factor then gives NaN against inf. The MLX and the C
printers both follow this order, so a kernel and the MLX path round alike
and show the same NaN and inf.
"""

from __future__ import annotations

import sympy as sp

# How much of the data a value varies with: not at all (parameters), per row, per element.
SCALAR, ROW, ELEMENT = 0, 1, 2


def sum_order(terms, level):
    """The terms of a sum in the order they are added (``level``: a term's SCALAR, ROW or ELEMENT).

    The terms that vary most first, positive ones then negative ones (as
    subtractions, which cost no negation), each group in SymPy's canonical
    order; then the sum of the others, computed once at their own level. The
    terms that vary most are where large values cancel (``targets - inputs``):
    they meet before anything smaller is added. Without a positive term, the
    others lead (``1 - x``).
    """
    top = max(level(t) for t in terms)
    first = [t for t in terms if level(t) == top]
    rest = [sp.Add(*[t for t in terms if level(t) < top])] if any(level(t) < top for t in terms) else []
    positive = sorted((t for t in first if not t.could_extract_minus_sign()), key=sp.default_sort_key)
    negative = sorted((t for t in first if t.could_extract_minus_sign()), key=sp.default_sort_key)
    return positive + negative + rest if positive else rest + negative


def product_parts(factors, level, at_least=SCALAR):
    """``(low, top, divisors)``: a product as ``low * top[0] * top[1] ... / divisors[0] / ...``.

    ``top`` are the factors that vary most, multiplied one by one; ``low``
    the product of the others (numbers and parameters included) computed
    once at their own level; ``divisors`` the factors with a negative number
    as exponent (``x**-2`` divides by ``x**2``; a symbolic exponent stays a
    power) that vary most or not at all (a parameter may be 0: the division
    gives inf as the math does). A sum that varies most gives its common
    number to ``low`` (``(x + y)/2`` is one scaling).
    """
    coefficient, plain = sp.Integer(1), []
    for factor in factors:
        if factor.is_Add and level(factor) == ELEMENT:
            content, factor = factor.as_content_primitive()
            coefficient *= content
        number, rest = factor.as_coeff_mul()
        coefficient *= number
        plain.extend(rest)
    numerator, denominator = [], []
    for factor in plain:
        base, exponent = factor.as_base_exp()
        if exponent.is_Number and exponent < 0 and not base.is_Number:
            denominator.append(base ** -exponent)
        else:
            numerator.append(factor)
    top = max([level(f) for f in numerator + denominator] + [at_least])
    low = coefficient * sp.Mul(*[f for f in numerator if level(f) < top])
    low /= sp.Mul(*[f for f in denominator if SCALAR < level(f) < top])
    divisors = [d for d in denominator if level(d) == top or level(d) == SCALAR]
    return low, [f for f in numerator if level(f) == top], divisors


def print_sum(terms, print_term):
    """``terms`` (in ``sum_order``) as code: a leading minus, ``+`` and ``-`` between, sums in parentheses."""
    code = ""
    for index, term in enumerate(terms):
        text = print_term(term)
        if term.is_Add:
            text = f"({text})"
        if text.startswith("-"):
            code += ("-" if index == 0 else " - ") + text[1:]
        else:
            code += ("" if index == 0 else " + ") + text
    return code
