"""Passes on the IR shared by every backend, before any printer.

``rewrite``: cheaper forms of the same value (clips, masks, the Huber family).
``schedule``: common subexpressions shared, statements put in order.
``residuals``: which costly forward values the backward reads instead of recomputing.
"""
