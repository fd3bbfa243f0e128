"""The spec vocabulary: what a user writes in ``specs/<loss>.py``.

A spec declares the arrays a loss takes, its scalar parameters and flags, and
its math as a SymPy expression, then builds one :class:`Loss`:

* an **elementwise** loss gives ``elementwise=f(inputs, params)``;
* a **row-wise** loss gives ``row=h(R_1, ..., R_m)`` where each ``R_k`` is a
  row reduction along ``axis`` (:class:`RowSum`, :class:`RowMean`,
  :class:`RowMax`, :class:`LogSumExp`, :class:`Gather`) of an expression of
  the row's elements. Reductions may nest (a reduction's argument may use an
  earlier reduction), and the epilogue ``h`` may use per-row inputs.

Weights (per loss element or per class), the ``none|mean|sum`` reduction,
class-index targets (their probability form, rows ignored by an
``ignore_index``) and keyword-only options are part of the vocabulary, not
per-loss code.
"""

from __future__ import annotations

import keyword
import math
import re
from dataclasses import dataclass, field

import sympy as sp

from .functions import Select, log_sigmoid, logaddexp, logcosh, maximum, minimum, relu, sigmoid, softplus

__all__ = [
    "Loss", "Input", "Sequence", "Contrastive", "ClassTarget", "ClassWeights", "Weights", "Param", "Flag", "Term",
    "RowSum", "RowMean", "RowMax", "LogSumExp", "Gather", "Select",
    "sigmoid", "softplus", "log_sigmoid", "logaddexp", "logcosh", "maximum", "minimum", "relu",
    "SpecError",
]

REDUCTIONS = ("none", "mean", "sum")


class SpecError(ValueError):
    """A spec that cannot be compiled; the loader prefixes the spec file."""


# What the generated code names its own values: the IR's symbols (ir.COTANGENT, ir.ROW_LENGTH), the
# public function's arguments and modules, and the temporaries t0, t1, ... of common subexpressions.
RESERVED_NAMES = {"cotangent", "row_length", "kept_row", "inside_row", "counted_row", "row_fill", "loss", "output",
                  "primals", "axis", "reduction", "mx", "math"}
TEMP_PREFIX = "t"


# Names the generated module uses for itself: a spec name equal to one would
# shadow it (silently wrong code), so specs may not use them.
GENERATED_NAMES = frozenset(RESERVED_NAMES | {
    "rt", "form", "variant", "kept", "dtype", "compute", "forward", "backward", "residuals", "rows",
    "weights",  # the Weights argument's own name, nothing else's
    "abs",  # printed for |.| of parameters
    "backend",  # the public function's choice of path (MLX, Metal, CUDA)
    "differentiable",  # whether the backward will be differentiated again (second order)
    # the locals of the custom functions' vjp and jvp
    "arguments", "cotangents", "tangents", "outputs", "grads", "of_weights", "unweighted", "derivative",
    "inside",  # the rows whose class index is inside the row
    "of_params",  # the gradients of parameters given as arrays
    "arrays", "mlx_path",  # the kernels' arguments and their fallback (the MLX bodies) for transformations
    "given",  # the backward's arguments as given: the gradients' dtypes
    "program", "programs", "gradients",  # the compiled forward and backwards of each variant
    # the residual policy of elementwise losses (rt.holds_elements) and the chunks of rows
    "hold", "held", "holding", "recomputing",
    "chunked", "by_rows",  # half-precision gradients each by itself, in chunks (rt.one_at_a_time)
    # the linear_ forms' own arguments and locals (their head is ``weight`` and ``bias`` where the spec
    # has no argument of either name, else these: see HEAD_NAMES)
    "group", "class_group",  # the ranks a mean or sum is over, and those the classes are split across
    "hidden", "head_weight", "head_bias", "chunk_size", "rows_loss", "count", "head", "softcap", "return_logsumexp",
    "excluded", "program",  # a class per token left out of its row; the backward's program on blocks
    "class_chunk_size", "row_values", "block_gradient",  # the backward on blocks of the classes
    # the distillation forms' (a teacher's head beside the student's)
    "teacher_hidden", "teacher_weight", "teacher_bias", "teacher", "student",
    "sequences",  # the sequence forms' log-probabilities made through the head
    # the recurrence losses' steps and custom functions (generated/_lattice.py runs them)
    "add", "alignments", "alphas", "betas", "emission", "emissions", "following", "grad", "losses", "previous",
    "reached", "shares", "states", "total", "indices", "per_item", "axes",
})
# The linear_ forms' head, where the spec declares neither name (multi_margin_loss's class ``weight``
# makes it head_weight and head_bias): a spec may use them.
HEAD_NAMES = frozenset({"weight", "bias"})
# The distillation forms' temperature, where the spec declares nothing of that name (a spec may).
TEMPERATURE_NAME = "temperature"
# The arguments the linear_ form of a loss of Sequence inputs adds (a spec of them may not declare these).
SEQUENCE_FORM_NAMES = HEAD_NAMES | {"ignore_index", "softcap", "chunk_size", "class_chunk_size", "compute_nll_loss",
                                    "alpha"}
# Names the generated package gives its own members besides the losses (its kernels' subpackage, the
# function that picks a backend, the gradients' sum across ranks): a loss so named could not be imported.
PACKAGE_NAMES = frozenset({"kernels", "set_backend", "sum_gradients"})
# Forms of the generated code's own variables: temporaries, adjoints,
# gradients, reduction results.
GENERATED_NAME_FORMS = re.compile(
    rf"{TEMP_PREFIX}\d+|d_.*|grad_.*|b\d+_.*|ties_.*|(sum|mean|max|logsumexp|gather|shift|shifted)\d+(_\w+)?"
    r"|(label|previous|reached)_(after_)?\d+"  # a recurrence step's values and labels k states before or after
)


def check_name(name, what):
    """``name`` as a plain str that is safe to print as a Python (and C) identifier."""
    if not isinstance(name, str) or not name.isascii() or not str.isidentifier(name) or keyword.iskeyword(name):
        raise SpecError(f"{what} name {name!r} is not a valid Python identifier (ASCII letters, digits, _)")
    name = str.__str__(name)  # a plain str, whatever subclass was given
    if name.startswith("_"):
        raise SpecError(f"{what} name {name!r} must not start with an underscore")
    if name in GENERATED_NAMES:
        raise SpecError(f"{what} name {name!r} is reserved for the generated code")
    if GENERATED_NAME_FORMS.fullmatch(name):
        raise SpecError(f"{what} name {name!r} has a form the generated code uses for its own variables")
    return name


def _check_text(text, what):
    """Free text (docs) as a plain str; it is escaped wherever it is printed."""
    if not isinstance(text, str):
        raise SpecError(f"{what} must be a string, got {type(text).__name__}")
    return str.__str__(text)


def _plain_number(value, what):
    """An int or a finite float, as the exact built-in type (its repr is printed as code)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(f"{what} must be a number, got {value!r}")
    value = int.__int__(value) if isinstance(value, int) else float.__float__(value)
    if not math.isfinite(value):
        raise SpecError(f"{what} must be finite, got {value!r}")
    return value


class _Declared(sp.Symbol):
    """A SymPy symbol that also carries its declaration.

    Built uncached (``__xnew__``) so two specs declaring the same name in one
    process never share metadata.
    """

    keyword_only = False  # set by the declarations that may follow ``*`` in the signature

    def __new__(cls, name, **assumptions):
        name = check_name(name, cls.__name__)
        return sp.Symbol.__xnew__(cls, name, real=True, **assumptions)

    def _hashable_content(self):
        # SymPy caches expressions by equality: were two declarations of one name
        # equal (a Term "error" defined differently in two specs), a formula could
        # come back holding the other spec's symbol. The declaration is part of
        # the identity.
        return super()._hashable_content() + tuple(sorted(self.__dict__.items()))


INPUT_DOMAINS = ("real", "log_probabilities")


class Input(_Declared):
    """A float array argument.

    Element-level by default (one value per loss element, or per element of a
    row for row-wise losses); ``per_row=True`` declares one value per row (the
    shape of the loss before reduction). ``domain="log_probabilities"`` says
    what the values mean (a row of them sums to 1 after ``exp``; each value of
    an elementwise loss's is at most 0): the catalogue plots the loss on such values.
    """

    def __new__(cls, name, *, differentiable=True, per_row=False, domain="real", doc=""):
        obj = super().__new__(cls, name)
        obj.differentiable = bool(differentiable)
        obj.per_row = bool(per_row)
        if domain not in INPUT_DOMAINS:
            raise SpecError(f"domain of input {name!r} must be one of {INPUT_DOMAINS}, got {domain!r}")
        obj.domain = domain
        obj.doc = _check_text(doc, f"doc of input {name!r}")
        return obj


SEQUENCE_SUFFIX = "_logps"


class _LogProbability(Input):
    """What Sequence and Contrastive share: each value is one log-probability (the name ends in ``_logps``),
    which their ``linear_`` form makes with ``token_loss`` (a class loss of the package with a ``linear_`` form)."""

    def __new__(cls, name, token_loss, doc):
        name = check_name(name, cls.__name__)
        if not name.endswith(SEQUENCE_SUFFIX) or name == SEQUENCE_SUFFIX:
            raise SpecError(f"{cls.__name__} {name!r}: its name ends in {SEQUENCE_SUFFIX!r} (as chosen_logps): each "
                            "value is a log-probability, and what precedes it may name the linear_ form's arguments")
        obj = super().__new__(cls, name, domain="log_probabilities", doc=doc)
        obj.token_loss = check_name(token_loss, f"token_loss of {cls.__name__} {name!r}")
        return obj


class Sequence(_LogProbability):
    """A sequence's log-probability: one value per sequence, the sum over its tokens of each token's
    log-probability of its label (with ``average=True``, their mean).

    The loss takes these values as they are (an array of them, as TRL's
    preference losses do), and its ``linear_`` form makes them from each
    sequence's hidden states through the head: minus the sum (or mean) of its
    tokens' ``token_loss`` (a class loss with a ``linear_`` form, the cross
    entropy) over the tokens whose label is not ``ignore_index``. The name
    ends in ``_logps``; what precedes it names the ``linear_`` form's
    arguments: ``chosen_logps`` gives ``chosen_hidden`` and ``chosen_labels``.
    """

    def __new__(cls, name, *, average=False, token_loss="cross_entropy", doc=""):
        if not isinstance(average, bool):
            raise SpecError(f"average= of sequence {name!r} must be True or False, got {average!r}")
        obj = super().__new__(cls, name, token_loss, doc)
        obj.average = average
        return obj

    @property
    def prefix(self):
        """What names the sequence's hidden states and labels: ``chosen`` for ``chosen_logps``."""
        return self.name[:-len(SEQUENCE_SUFFIX)]


class Contrastive(_LogProbability):
    """Each query's log-probability of its own key among a batch of keys: the diagonal of
    ``log_softmax(scale * queries @ keys.T)`` along the keys (InfoNCE's; CLIP's, one way).

    The loss takes these values as they are; its ``linear_`` form makes them
    from the embeddings ``queries`` and ``keys`` (names of its arguments,
    ``(batch, features)`` each): minus ``token_loss`` (the cross entropy) of
    the rows of ``scale * queries @ keys.T`` against their diagonal, the keys
    as the head of ``linear_<token_loss>``, so the batch-by-batch matrix is
    never whole. ``scale``: a :class:`Param` (the ``linear_`` form's argument,
    positive, learnable as an array) the similarities are multiplied by, or
    with ``divide=True`` divided by (a temperature); None for 1.
    ``normalize=True``: queries and keys are L2-normalised first (cosine
    similarities). ``views=True``: queries and keys are two views of one batch (SimCLR's NT-Xent):
    each query's candidates are every other embedding of both views, its own left out, its key (the
    same row of the other view) the positive. The name ends in ``_logps``.
    """

    def __new__(cls, name, *, queries, keys, scale=None, divide=False, normalize=False, views=False,
                token_loss="cross_entropy", doc=""):
        if scale is not None and not (isinstance(scale, Param) and not scale.integer and scale.default is not None):
            raise SpecError(f"scale= of contrastive {name!r} must be a float Param, got {scale!r}")
        for flag, value in (("divide", divide), ("normalize", normalize), ("views", views)):
            if not isinstance(value, bool):
                raise SpecError(f"{flag}= of contrastive {name!r} must be True or False, got {value!r}")
        obj = super().__new__(cls, name, token_loss, doc)
        obj.queries = check_name(queries, f"queries of contrastive {name!r}")
        obj.keys = check_name(keys, f"keys of contrastive {name!r}")
        if obj.queries == obj.keys:
            raise SpecError(f"contrastive {name!r}: queries and keys are two arrays, got {queries!r} for both")
        obj.scale, obj.divide, obj.normalize, obj.views = scale, divide, normalize, views
        return obj


class ClassWeights(Input):
    """Optional per-class weights, such as torch's ``weight`` or ``pos_weight``.

    A 1-d array with one value per class: per position along the loss axis
    (row-wise losses) or along the last axis (elementwise losses). ``None``
    (the default) weighs every class 1. In formulas it stands for the weight
    of each element's class, so ``Gather(weight, targets)`` is the weight of
    the target class. Not differentiable. ``keyword_only=True`` puts it after
    ``reduction``, behind ``*``.
    """

    def __new__(cls, name="weight", *, keyword_only=False, doc="Optional weights for each class. Default: ``None``."):
        obj = super().__new__(cls, name, differentiable=False, doc=doc)
        obj.keyword_only = bool(keyword_only)
        return obj


class ClassTarget(_Declared):
    """Integer class indices along the loss axis (one per row).

    In formulas it stands for the one-hot row of its class: ``Gather(f(z), t)``
    is ``f`` at the target class, and ``t`` alone is 1 at the target, 0
    elsewhere. With ``probabilities=True`` the argument may also be a float
    array of the logits' shape, and ``t`` is then that probability row.
    ``ignore_index`` names an integer :class:`Param`: rows whose target equals
    it contribute nothing, and ``mean`` divides by the rows kept. Probability
    targets are differentiable (class indices are integers, and are not).
    """

    def __new__(cls, name, *, probabilities=False, ignore_index=None, doc=""):
        obj = super().__new__(cls, name)
        obj.differentiable = bool(probabilities)
        obj.per_row = False
        obj.probabilities = bool(probabilities)
        obj.ignore_index = ignore_index
        obj.doc = _check_text(doc, f"doc of input {name!r}")
        return obj


class Weights(_Declared):
    """Optional per-loss-element weights (default ``None``), applied before the reduction."""

    def __new__(cls, name="weights", *, doc="Optional weights for each target. Default: ``None``."):
        # "weights" is reserved for the generated core's own argument, which these weights fill
        name = name if name == "weights" else check_name(name, "Weights")
        obj = sp.Symbol.__xnew__(cls, name, real=True)
        obj.differentiable = True
        obj.per_row = True
        obj.doc = _check_text(doc, f"doc of weights {name!r}")
        return obj


_RANGE = re.compile(r"^\s*([\[(])\s*([^,\s]+)\s*,\s*([^,\s\])]+)\s*([\])])\s*$")


@dataclass(frozen=True)
class Range:
    """A parameter's allowed interval, parsed from ``range="[a, b)"``."""

    low: float
    high: float
    low_open: bool
    high_open: bool

    @classmethod
    def parse(cls, text, param):
        match = _RANGE.match(text) if isinstance(text, str) else None
        if not match:
            raise SpecError(
                f"range of parameter {param!r} must look like '(0, inf)' or '[0, 1)', got {text!r}"
            )
        lo_bracket, lo, hi, hi_bracket = match.groups()
        try:
            low, high = float(lo), float(hi)
        except ValueError:
            raise SpecError(f"range of parameter {param!r} has a bound that is not a number: {text!r}") from None
        if math.isnan(low) or math.isnan(high):
            raise SpecError(f"range of parameter {param!r} has a bound that is not a number: {text!r}")
        if low > high:
            raise SpecError(f"range of parameter {param!r} is empty: {text!r}")
        return cls(low, high, lo_bracket == "(", hi_bracket == ")")

    def contains(self, value):
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __str__(self):
        fmt = lambda v: "inf" if v == math.inf else "-inf" if v == -math.inf else repr(v)
        return f"{'(' if self.low_open else '['}{fmt(self.low)}, {fmt(self.high)}{')' if self.high_open else ']'}"


_REQUIRED = object()  # marks a default the spec did not give


class Param(_Declared):
    """A scalar argument with a default and a valid range such as ``'(0, inf)'``.

    An integer default makes an integer parameter (floats are refused for it).
    ``default=None`` makes an optional parameter, off unless given (declare
    ``integer=True`` for an integer one); a formula cannot use it, only a
    :class:`ClassTarget`'s ``ignore_index`` can. ``keyword_only=True`` puts it
    after ``reduction``, behind ``*``, so a new option never shifts an existing
    positional signature.
    """

    def __new__(cls, name, default=_REQUIRED, *, range="(-inf, inf)", integer=None, keyword_only=False, doc=""):
        obj = super().__new__(cls, name)
        if default is _REQUIRED:
            raise SpecError(f"parameter {name!r} has no default: write Param({name!r}, <default>, ...)")
        if default is not None:
            default = _plain_number(default, f"the default of parameter {name!r}")
        if integer is not None and not isinstance(integer, bool):
            raise SpecError(f"integer= of parameter {name!r} must be True or False, got {integer!r}")
        if integer is not None and default is not None and integer != isinstance(default, int):
            raise SpecError(f"parameter {name!r}: integer={integer} contradicts its default {default!r}")
        obj.default = default
        obj.optional = default is None
        obj.integer = isinstance(default, int) if integer is None else integer
        obj.range = Range.parse(range, name)
        if default is not None and not obj.range.contains(default):
            raise SpecError(f"default {default!r} of parameter {name!r} is outside its range {obj.range}")
        obj.keyword_only = bool(keyword_only)
        obj.doc = _check_text(doc, f"doc of parameter {name!r}")
        return obj


class Flag(_Declared):
    """A boolean argument; formulas branch on it with ``Select(flag, a, b)``.

    ``keyword_only=True`` puts it after ``reduction``, behind ``*``.
    """

    def __new__(cls, name, default=_REQUIRED, *, keyword_only=False, doc=""):
        obj = super().__new__(cls, name)
        if default is _REQUIRED:
            raise SpecError(f"flag {name!r} has no default: write Flag({name!r}, True) or Flag({name!r}, False)")
        if not isinstance(default, bool):
            raise SpecError(f"flag {name!r} needs a True/False default, got {default!r}")
        obj.default = default
        obj.keyword_only = bool(keyword_only)
        obj.doc = _check_text(doc, f"doc of flag {name!r}")
        return obj


class Term(_Declared):
    """A named intermediate term: ``d = Term("diff", x - y)``.

    Derivation sees through it; the generated code computes it once under
    its name, so the output reads like the spec.
    """

    def __new__(cls, name, definition):
        obj = super().__new__(cls, name)
        if isinstance(definition, str):
            raise SpecError(f"term {name!r} must be defined by a SymPy expression, not a string")
        try:
            obj.definition = sp.sympify(definition, strict=True)
        except (sp.SympifyError, TypeError) as err:
            raise SpecError(f"term {name!r} is not a SymPy expression: {err}") from None
        return obj

    @classmethod
    def generated(cls, name, definition):
        """A term the generator introduces, under a name of the forms specs may not use (``shifted0``)."""
        obj = sp.Symbol.__xnew__(cls, name, real=True)
        obj.definition = definition
        return obj


class _RowReduction(sp.Function):
    """A reduction of a per-element expression along the loss axis."""

    kind = ""


class RowSum(_RowReduction):
    """The sum of an expression over the row's elements."""

    nargs = 1
    kind = "sum"


class RowMean(_RowReduction):
    """The mean of an expression over the row's elements."""

    nargs = 1
    kind = "mean"


class RowMax(_RowReduction):
    """Row maximum; the gradient goes to every element equal to the maximum."""

    nargs = 1
    kind = "max"


class LogSumExp(_RowReduction):
    """log(sum(exp(.))) along the row, evaluated with the maximum subtracted."""

    nargs = 1
    kind = "logsumexp"


class Gather(_RowReduction):
    """``Gather(f, t)``: ``f`` at the class ``t`` (a :class:`ClassTarget`).

    With probability targets it is the expectation ``sum_j t_j f_j``.
    """

    nargs = 2
    kind = "gather"


ROW_REDUCTIONS = (RowSum, RowMean, RowMax, LogSumExp, Gather)


def is_element_level(symbol):
    """Whether ``symbol`` holds one value per element of a row (a class target or an Input not per_row)."""
    return isinstance(symbol, ClassTarget) or (isinstance(symbol, Input) and not symbol.per_row)


@dataclass
class Loss:
    """One loss: its public signature and its math.

    The generated function's signature is: array inputs in order, then
    ``weights`` (if declared), ``axis`` (row-wise losses), the parameters and
    flags in order, ``reduction``, and last, behind ``*``, the declarations
    made ``keyword_only``.
    """

    name: str
    inputs: list
    params: list = field(default_factory=list)
    reduction: str = "mean"
    doc: str = ""
    elementwise: object = None
    row: object = None
    axis: int | None = None
    kinks: str = ""
    weights: Weights | None = None
    broadcast: bool = False  # broadcast element inputs together (else shapes must match)
    # with Sequence inputs: whether their linear_ form adds the chosen tokens' cross entropy by default
    # (``compute_nll_loss``, Liger's), the first sequence being the chosen one
    nll: bool = False
    # a loss over the alignments of label sequences to frames (CTC): Alignment.recurrence(...)
    recurrence: object = None
    source: str = ""  # the spec file, filled in by the loader

    def __post_init__(self):
        # Everything printed into the generated code is normalised to plain
        # built-in values here (names, numbers, text), so a spec cannot smuggle
        # code in through a str/int subclass or an odd repr.
        self.name = check_name(self.name, "Loss")
        if self.name in PACKAGE_NAMES:
            raise SpecError(f"loss name {self.name!r} is reserved: the generated package uses it for its own")
        self.doc = _check_text(self.doc, "doc")
        self.kinks = _check_text(self.kinks, "kinks")
        if not isinstance(self.reduction, str) or str.__str__(self.reduction) not in REDUCTIONS:
            raise SpecError(f"default reduction must be one of {REDUCTIONS}, got {self.reduction!r}")
        self.reduction = str.__str__(self.reduction)
        self.broadcast = bool(self.broadcast)
        if self.recurrence is not None:
            self._check_recurrence()
            return
        self._check_shape()
        self._check_declarations()
        self._check_names()
        self._check_sequences()
        self.formula = _formula(self.elementwise if self.row is None else self.row)

    def _check_shape(self):
        if (self.elementwise is None) == (self.row is None):
            raise SpecError("give exactly one of elementwise= (per-element loss) or row= (row-wise loss)")
        if self.row is not None and (isinstance(self.axis, bool) or not isinstance(self.axis, int)):
            raise SpecError("a row-wise loss needs an integer default axis= (the axis it reduces along)")
        if self.elementwise is not None and self.axis is not None:
            raise SpecError("axis= is only for row-wise losses")
        if self.axis is not None:
            self.axis = int.__int__(self.axis)

    def _declaration_lists(self):
        """inputs= and params= as lists; the params Param and Flag declarations."""
        for what in ("inputs", "params"):
            if not isinstance(getattr(self, what), (list, tuple)):
                raise SpecError(f"{what}= must be a list of declarations, got {getattr(self, what)!r}")
            setattr(self, what, list(getattr(self, what)))
        for item in self.params:
            if not isinstance(item, (Param, Flag)):
                raise SpecError(f"params must be Param or Flag declarations, got {item!r}")

    def _check_declarations(self):
        self._declaration_lists()
        for item in self.inputs:
            if not isinstance(item, (Input, ClassTarget)):
                raise SpecError(f"inputs must be Input or ClassTarget declarations, got {item!r}")
        if not any(isinstance(i, Input) and not i.per_row and not isinstance(i, ClassWeights) for i in self.inputs):
            raise SpecError("a loss needs at least one element-level float Input")
        positional = [i for i in self.inputs if not i.keyword_only]
        for before, after in zip(positional, positional[1:]):
            if isinstance(before, ClassWeights) and not isinstance(after, ClassWeights):
                raise SpecError(
                    f"input {after.name!r} has no default, so it cannot follow the optional "
                    f"class weights {before.name!r}: list it first or make the weights keyword_only"
                )
        if self.weights is not None and not isinstance(self.weights, Weights):
            raise SpecError(f"weights= must be a Weights declaration, got {self.weights!r}")
        if len(self.class_targets) > 1:
            raise SpecError("a loss takes at most one ClassTarget")
        for target in self.class_targets:
            if target.ignore_index is not None and not (
                isinstance(target.ignore_index, Param) and target.ignore_index.integer
                and target.ignore_index in self.params
            ):
                raise SpecError(f"ignore_index of {target.name!r} must be an integer Param listed in params")

    def _check_names(self):
        """Declared once each, none the loss's own name or a name the generated code derives from another."""
        names = [d.name for d in self.declarations]
        derived = {f"{t.name}_{suffix}" for t in self.class_targets for suffix in ("index", "onehot")}
        derived |= {f"{p.name}_value" for p in self.params if isinstance(p, Param) and not p.integer}
        for name in names:
            if names.count(name) > 1:
                raise SpecError(f"name {name!r} is declared twice")
            if name == self.name:
                raise SpecError(f"name {name!r} is reserved: it is the loss's own name (the generated function's)")
            if name in derived:
                raise SpecError(f"name {name!r} has a form the generated code uses for its own variables")

    def _check_sequences(self):
        if not isinstance(self.nll, bool):
            raise SpecError(f"nll= must be True or False, got {self.nll!r}")
        if self.contrastives:
            self._check_contrastives()
        sequences = self.sequences
        if not sequences:
            if self.nll:
                raise SpecError("nll= is for losses of Sequence inputs (it adds the chosen tokens' cross entropy)")
            return
        if self.kind != "elementwise":
            raise SpecError("Sequence inputs are for elementwise losses (one value per sequence)")
        if len({s.token_loss for s in sequences}) > 1:
            raise SpecError("the Sequence inputs of one loss share one token_loss")
        declared = {d.name for d in self.declarations}
        for name in sorted(declared & SEQUENCE_FORM_NAMES):
            raise SpecError(f"name {name!r} is an argument of the linear_ form of a loss of Sequence inputs")
        for s in sequences:
            for derived in (f"{s.prefix}_hidden", f"{s.prefix}_labels"):
                if derived in declared:
                    raise SpecError(f"name {derived!r} is the linear_ form's argument for sequence {s.name!r}")

    def _check_contrastives(self):
        contrastives = self.contrastives
        if self.kind != "elementwise" or self.sequences or self.nll:
            raise SpecError("Contrastive inputs are for elementwise losses, without Sequence inputs or nll=")
        if len({c.token_loss for c in contrastives}) > 1:
            raise SpecError("the Contrastive inputs of one loss share one token_loss")
        scales = {(c.scale.name, c.scale.default, c.divide) if c.scale is not None else None for c in contrastives}
        if len(scales) > 1:
            raise SpecError("the Contrastive inputs of one loss share one scale (the same Param, divide= alike)")
        if len({c.normalize for c in contrastives}) > 1:
            raise SpecError("the Contrastive inputs of one loss are all normalized, or none")
        if len({c.views for c in contrastives}) > 1:
            raise SpecError("the Contrastive inputs of one loss are all of two views, or none")
        declared = {d.name for d in self.declarations}
        scale = contrastives[0].scale
        for name in sorted({n for c in contrastives for n in (c.queries, c.keys)} | ({scale.name} if scale else set())):
            if name in declared | SEQUENCE_FORM_NAMES | GENERATED_NAMES:
                raise SpecError(f"name {name!r} of the linear_ form of a Contrastive input is declared, or reserved")

    def _check_recurrence(self):
        from .recurrence import Recurrence  # the construct builds on this module's declarations

        if not isinstance(self.recurrence, Recurrence):
            raise SpecError(f"recurrence= must be made by Alignment.recurrence(...), got {self.recurrence!r}")
        if self.elementwise is not None or self.row is not None or self.axis is not None or self.weights is not None \
                or self.nll:
            raise SpecError("a recurrence loss takes neither elementwise=, row=, axis=, weights= nor nll=")
        self._declaration_lists()
        alignment = self.recurrence.alignment
        if [i.name for i in self.inputs] != [i.name for i in alignment.inputs]:
            raise SpecError("a recurrence loss's inputs= are its Alignment's arrays, in order: inputs=paths.inputs")
        self.inputs = list(alignment.inputs)
        for needed in (alignment.separator, self.recurrence.zero_infinity):
            if needed is not None and needed not in self.params:
                raise SpecError(f"{needed.name!r} of the recurrence must be listed in params")
        self._check_names()
        self.formula = self.recurrence.step

    @property
    def sequences(self):
        return [i for i in self.inputs if isinstance(i, Sequence)]

    @property
    def contrastives(self):
        return [i for i in self.inputs if isinstance(i, Contrastive)]

    @property
    def kind(self):
        if self.recurrence is not None:
            return "recurrence"
        return "elementwise" if self.row is None else "rowwise"

    @property
    def class_targets(self):
        return [i for i in self.inputs if isinstance(i, ClassTarget)]

    @property
    def flags(self):
        return [p for p in self.params if isinstance(p, Flag)]

    @property
    def numeric_params(self):
        return [p for p in self.params if isinstance(p, Param)]

    @property
    def declarations(self):
        return list(self.inputs) + ([self.weights] if self.weights is not None else []) + list(self.params)


def _formula(formula):
    """The spec's formula as a numeric SymPy expression."""
    if isinstance(formula, str):
        raise SpecError("the formula must be a SymPy expression of the declarations, not a string")
    try:
        formula = sp.sympify(formula, strict=True)
    except (sp.SympifyError, TypeError) as err:
        raise SpecError(f"the formula is not a SymPy expression: {err}") from None
    if not isinstance(formula, sp.Expr):
        raise SpecError(f"the formula must be a numeric SymPy expression, got {type(formula).__name__}")
    return formula
