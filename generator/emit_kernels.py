"""The GPU backends: Metal and CUDA kernels lowered from the MLX path's scheduled IR.

Each variant of a loss (flags, target form) gets a forward and a backward
kernel. The statements are the ones ``lower.schedule`` gives the MLX printer;
here the C printer prints them once per backend and the templates in
``templates/gpu/`` lay them out, spelled by ``templates/<backend>/dialect.j2``
and preceded by ``templates/<backend>/header.j2`` (the ``losscc_*`` helpers).

* Elementwise: one thread per element. The forward kernel writes the loss of
  each element, or (``mean``/``sum``) each threadgroup writes the sum of its
  elements, so the reduction costs no extra pass over memory. The backward
  kernel writes the gradient of every differentiable input (aliases such as
  ``grad_y = -grad_x`` included) and of the weights.
* Row-wise: one threadgroup per row, any row length (threads stride over the
  row). Reductions that do not depend on one another share one pass over the
  row; each pass ends with a simdgroup reduction and one across simdgroups
  through threadgroup memory. A gather at a class index reads one element.
  The forward kernel writes each row's loss and the reductions the backward
  kernel needs (residuals); the backward kernel runs its own reductions, the
  row adjoints, then one pass writing the element gradients.

Kernel arguments are named ``<input>_in`` and ``<output>_out``; ``params``
holds the numeric parameters (float32) and ``meta`` the sizes and switches
(int32). The runtime (``generated/_gpu.py``) maps them by the keys listed with
each kernel.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import jinja2

from .derive import collect_terms, used_terms
from .ir import ROW_LENGTH, ElementwiseIR
from .lower import schedule
from .printers.c import CUDA, METAL, CPrinter, c_name, declaration, is_condition
from .spec import ClassTarget, Input

BACKENDS = {"metal": METAL, "cuda": CUDA}
ELEMENT_THREADS = 256  # threads per threadgroup of the elementwise kernels
SCALAR_BYTES = 4  # the traffic figure counts float32 arrays and int32 indices


@dataclass
class Traffic:
    """Bytes a kernel moves per element and per row, and the least it could.

    The minimum reads each array the math needs once and writes each output
    once; extra passes over a row, residuals and partial sums are the excess.
    """

    element_bytes: float
    row_bytes: float
    minimum_element_bytes: float
    minimum_row_bytes: float
    passes: int

    def ratio(self, row_length=1):
        actual = self.element_bytes + self.row_bytes / row_length
        least = self.minimum_element_bytes + self.minimum_row_bytes / row_length
        return actual / least if least else 1.0


@dataclass
class Kernel:
    name: str
    inputs: list  # [(argument name, runtime key)]
    outputs: list  # [(argument name, runtime key)]
    sources: dict  # backend -> kernel body
    traffic: Traffic
    loops: bool = True  # whether its threads loop over the row (else one simdgroup per row is enough)


@dataclass
class VariantKernels:
    suffix: str  # the variant's key in the generated module (flags, then the target form)
    forward: Kernel
    backward: Kernel


def _environment(templates):
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def headers(templates):
    """The helper header of each backend (prepended to every kernel)."""
    env = _environment(templates)
    return {backend: env.get_template(f"{backend}/header.j2").render() for backend in BACKENDS}


def _definitions(expressions, terms):
    return {t: t.definition for t in used_terms(expressions, terms)}


def _free(statements):
    defined = {s.symbol for s in statements}
    return set().union(*(s.expr.free_symbols for s in statements)) - defined if statements else set()


def _closure(statements, wanted):
    """The statements (in order) that the symbols ``wanted`` depend on."""
    by_symbol = {s.symbol: s for s in statements}
    needed, stack = set(), list(wanted)
    while stack:
        symbol = stack.pop()
        if symbol in by_symbol and symbol not in needed:
            needed.add(symbol)
            stack.extend(by_symbol[symbol].expr.free_symbols)
    return [s for s in statements if s.symbol in needed]


class _Program:
    """What one kernel reads, computes and writes, printed for one backend."""

    def __init__(self, loss, dialect):
        self.loss = loss
        self.printer = CPrinter(dialect)
        self.inputs = []  # [(argument, key)]
        self.conditions = set()  # symbols holding a truth value


    def use(self, argument, key):
        if (argument, key) not in self.inputs:
            self.inputs.append((argument, key))

    def lines(self, statements):
        for s in statements:
            if is_condition(s.expr, self.conditions):
                self.conditions.add(s.symbol)
        return [declaration(self.printer, c_name(s.name), s.expr, self.conditions) for s in statements]

    def arguments(self):
        """The kernel's inputs in a fixed order: arrays as the loss lists them, then the rest."""
        rank = lambda key: ("input", "residual", "cotangent", "weights", "params", "meta").index(key.split(":")[0])
        order = {f"input:{i.name}": n for n, i in enumerate(self.loss.inputs)}
        return sorted(self.inputs, key=lambda item: (rank(item[1]), order.get(item[1], 0), item[1]))

    def param_reads(self, symbols):
        numeric = self.loss.numeric_params
        used = [p for p in numeric if p in symbols]
        if used:
            self.use("params", "params")
        return [f"const float {c_name(p.name)} = params[{numeric.index(p)}];" for p in used]

    def element_reads(self, symbols, index, onehot=None):
        """Reads of the element inputs among ``symbols`` at ``index``."""
        lines = []
        for item in self.loss.inputs:
            if item not in symbols:
                continue
            name = c_name(item.name)
            if isinstance(item, ClassTarget) and onehot:
                lines.append(f"const float {name} = (static_cast<int64_t>(j) == {onehot}) ? 1.0f : 0.0f;")
            else:
                self.use(f"{name}_in", f"input:{item.name}")
                lines.append(f"const float {name} = static_cast<float>({name}_in[{index}]);")
        return lines


# ---------------------------------------------------------------- elementwise

def _elementwise(loss, variant, dialect):
    ir: ElementwiseIR = variant.ir
    terms = collect_terms(loss.formula)
    forward = schedule(_definitions([ir.loss], terms), [("loss", ir.loss)])
    aliased = {a.name for a in ir.aliases}
    computed = [(f"grad_{n}", e) for n, e in ir.gradients.items() if n not in aliased]
    backward = schedule(_definitions([e for _, e in computed], terms), computed)
    weighted = loss.weights is not None
    element_bytes = lambda symbols: SCALAR_BYTES * sum(1 for i in loss.inputs if i in symbols)

    # forward
    f = _Program(loss, dialect)
    f_free = _free(forward)
    reads = f.element_reads(f_free, "i")
    if weighted:
        f.use("weights_in", "weights")
    f.use("meta", "meta")
    forward_context = {
        "params": f.param_reads(f_free), "reads": reads, "lines": f.lines(forward), "weighted": weighted,
    }
    forward_outputs = [("loss_out", "loss"), ("partial_out", "partial")]
    # With mean|sum (the figure's setting) a threadgroup writes one float per ELEMENT_THREADS elements.
    forward_traffic = Traffic(
        element_bytes(f_free) + SCALAR_BYTES / ELEMENT_THREADS, 0, element_bytes(f_free), 0, 1,
    )

    # backward
    b = _Program(loss, dialect)
    b_free = _free(backward)
    reads = b.element_reads(b_free, "i")
    b.use("cotangent_in", "cotangent")
    # With weights the backward also needs the loss (d loss / d weights = cotangent * loss).
    forward_reads = b.element_reads(f_free - b_free, "i") if weighted else []
    if weighted:
        b.use("weights_in", "weights")
    b.use("meta", "meta")
    outputs, writes = [], []
    for item in loss.inputs:
        if not item.differentiable:
            continue
        alias = next((a for a in ir.aliases if a.name == item.name), None)
        value = f"grad_{c_name(item.name)}" if alias is None else (
            f"{'-' if alias.sign < 0 else ''}grad_{c_name(alias.source)}"
        )
        outputs.append((f"grad_{c_name(item.name)}_out", f"grad:{item.name}"))
        writes.append((f"grad_{c_name(item.name)}_out", value))
    if weighted:
        outputs.append(("grad_weights_out", "grad:weights"))
    backward_context = {
        "params": b.param_reads(b_free | (f_free if weighted else set())),
        "reads": reads, "lines": b.lines(backward), "writes": writes, "weighted": weighted,
        "forward_reads": forward_reads, "forward_lines": b.lines(forward) if weighted else [],
    }
    written = SCALAR_BYTES * len(writes)
    backward_traffic = Traffic(element_bytes(b_free) + written, 0, element_bytes(b_free) + written, 0, 1)
    return (
        ("elementwise_forward.j2", forward_context, f.arguments(), forward_outputs, forward_traffic),
        ("elementwise_backward.j2", backward_context, b.arguments(), outputs, backward_traffic),
    )


# ---------------------------------------------------------------- row-wise

def _rowwise_programs(loss, variant):
    """The scheduled forward and backward programs, as the MLX backend builds them."""
    ir = variant.ir
    terms = collect_terms(loss.formula)
    forward_defs = {r.symbol: r for r in ir.forward_reductions}
    forward_defs.update(_definitions([r.argument for r in ir.forward_reductions] + [ir.loss], terms))
    forward = schedule(forward_defs, [("loss", ir.loss)])
    outputs = [(f"grad_{n}", e) for n, e in ir.element_gradients.items()]
    outputs += [(f"grad_{n}", e) for n, e in ir.row_gradients.items()]
    backward_defs = {r.symbol: r for r in ir.backward_reductions}
    backward_defs.update(dict(ir.adjoints))
    backward_defs.update(_definitions(
        [r.argument for r in ir.backward_reductions] + [e for _, e in ir.adjoints] + [e for _, e in outputs], terms
    ))
    backward = schedule(backward_defs, outputs)
    residuals = [r.symbol for r in ir.forward_reductions if r.symbol in _free(backward)]
    return forward, backward, residuals


def _rowwise_kernel(loss, statements, dialect, form, direction, residuals):
    """The template context of one row-wise kernel, its arguments and its traffic."""
    program = _Program(loss, dialect)
    target = next(iter(loss.class_targets), None)
    onehot = f"{c_name(target.name)}_index" if target is not None and form == "indices" else None
    element_inputs = [i for i in loss.inputs if isinstance(i, ClassTarget) or not i.per_row]
    row_inputs = [i for i in loss.inputs if isinstance(i, Input) and i.per_row]
    free = _free(statements)

    # Which values are per element (they vary along the row) and when row values are known:
    # a reduction in pass p needs values of stage <= p and gives a value of stage p + 1.
    element = set(element_inputs)
    stage = {}
    pass_of = {}
    for s in statements:
        level = max((stage.get(d, 0) for d in s.expr.free_symbols), default=0)
        if s.reduction is not None:
            pass_of[s.symbol] = level
            stage[s.symbol] = level + 1
        else:
            stage[s.symbol] = level
            if s.expr.free_symbols & element:
                element.add(s.symbol)
    element_statements = [s for s in statements if s.symbol in element and s.reduction is None]
    row_statements = [s for s in statements if s.symbol not in element and s.reduction is None]
    passes = max(pass_of.values(), default=-1) + 1
    bytes_of = lambda symbols: SCALAR_BYTES * sum(1 for i in loss.inputs if i in symbols and (
        not isinstance(i, ClassTarget) or form == "probabilities"))
    element_read_bytes = 0
    row_bytes = 0
    read_in_loops = set()
    read_at_target = set()

    def loop_body(exprs, index="at"):
        needed = _closure(element_statements, set().union(*(e.free_symbols for e in exprs)))
        symbols = set().union(*(e.free_symbols for e in exprs), *(s.expr.free_symbols for s in needed))
        return program.element_reads(symbols, index, onehot), program.lines(needed), symbols

    def row_lines(level):
        return program.lines([s for s in row_statements if stage[s.symbol] == level])

    gathers_at_index = any(s.reduction is not None and s.reduction.kind == "gather" for s in statements)
    uses_target = onehot is not None and (target in free or gathers_at_index)
    prologue = program.param_reads(free)
    if uses_target:
        program.use(f"{c_name(target.name)}_in", f"input:{target.name}")
        row_bytes += SCALAR_BYTES
    for item in row_inputs:
        if item in free:
            name = c_name(item.name)
            program.use(f"{name}_in", f"input:{item.name}")
            prologue.append(f"const float {name} = static_cast<float>({name}_in[group]);")
            row_bytes += SCALAR_BYTES
    for symbol in residuals if direction == "backward" else []:
        name = c_name(symbol.name)
        program.use(f"{name}_in", f"residual:{symbol.name}")
        prologue.append(f"const float {name} = static_cast<float>({name}_in[group]);")
        row_bytes += SCALAR_BYTES
    if direction == "backward":
        program.use("cotangent_in", "cotangent")
        prologue.append("const float cotangent = static_cast<float>(cotangent_in[group]);")
        row_bytes += SCALAR_BYTES
    prologue += row_lines(0)

    stages = []
    for number in range(passes):
        reductions = [s for s in statements if s.reduction is not None and pass_of[s.symbol] == number]
        accumulators, gathers = [], []
        looped = []
        for s in reductions:
            kind = s.reduction.kind
            if kind == "gather" and form == "indices":
                if not (s.expr.free_symbols & element):
                    # A row-level value is the same at every class.
                    gathers.append({"symbol": c_name(s.name), "reads": [], "lines": [],
                                    "value": program.printer.doprint(s.expr), "row_level": True})
                    continue
                reads, lines, symbols = loop_body([s.expr])
                row_bytes += bytes_of(symbols)
                read_at_target |= symbols
                gathers.append({"symbol": c_name(s.name), "reads": reads, "lines": lines,
                                "value": program.printer.doprint(s.expr), "row_level": False})
                continue
            expr = target * s.expr if kind == "gather" else s.expr
            looped.append(expr)
            accumulators.append({
                "symbol": c_name(s.name), "kind": "sum" if kind == "gather" else kind,
                "value": program.printer.doprint(expr),
            })
        reads, lines, symbols = loop_body(looped) if looped else ([], [], set())
        element_read_bytes += bytes_of(symbols)
        read_in_loops |= symbols
        slot = 0
        for a in accumulators:  # where each partial value waits in threadgroup memory
            if a["kind"] == "logsumexp":
                a["slots"] = [(slot, f"acc_{a['symbol']}_max", "-losscc_inf()"),
                              (slot + 1, f"acc_{a['symbol']}_sum", "0.0f")]
            else:
                identity = "-losscc_inf()" if a["kind"] == "max" else "0.0f"
                a["slots"] = [(slot, f"acc_{a['symbol']}", identity)]
            slot += len(a["slots"])
        stages.append({
            "number": number, "accumulators": accumulators, "reads": reads, "lines": lines,
            "gathers": gathers, "after": row_lines(number + 1),
        })

    element_outputs = [s for s in statements if s.output and s.symbol in element]
    row_outputs = [s for s in statements if s.output and s.symbol not in element]
    outputs, element_writes, row_writes = [], [], []
    final = None
    if element_outputs:
        reads, lines, symbols = loop_body([s.symbol for s in element_outputs])
        element_read_bytes += bytes_of(symbols)
        read_in_loops |= symbols
        final = {"reads": reads, "lines": lines}
    cast = "static_cast<T>" if direction == "backward" else ""
    for s in element_outputs:
        outputs.append((f"{c_name(s.name)}_out", f"grad:{s.name[len('grad_'):]}"))
        element_writes.append((f"{c_name(s.name)}_out", f"{cast}({c_name(s.name)})"))
    for s in row_outputs:
        key = "loss" if s.name == "loss" else f"grad:{s.name[len('grad_'):]}"
        outputs.append((f"{c_name(s.name)}_out", key))
        row_writes.append((f"{c_name(s.name)}_out", f"{cast}({c_name(s.name)})"))
    if direction == "forward":
        for symbol in residuals:
            name = c_name(symbol.name)
            outputs.append((f"{name}_out", f"residual:{symbol.name}"))
            row_writes.append((f"{name}_out", name))
    program.use("meta", "meta")

    minimum_element = bytes_of(read_in_loops) + SCALAR_BYTES * len(element_writes)
    # An array only read at the target class needs one element per row, no pass over the row.
    least_row = bytes_of(read_at_target - read_in_loops) + SCALAR_BYTES * (
        sum(1 for i in row_inputs if i in free) + (1 if uses_target else 0)
        + (1 if direction == "backward" else 0) + len(row_outputs)
    )
    traffic = Traffic(
        element_read_bytes + SCALAR_BYTES * len(element_writes), row_bytes + SCALAR_BYTES * len(row_writes),
        minimum_element, least_row, passes + (1 if final else 0),
    )
    uses_row_length = ROW_LENGTH in free or any(a["kind"] == "mean" for st in stages for a in st["accumulators"])
    context = {
        "direction": direction,
        "prologue": prologue,
        "stages": stages,
        "final": final,
        "element_writes": element_writes,
        "row_writes": row_writes,
        "target": {
            "index": onehot, "buffer": f"{c_name(target.name)}_in",
            "ignore": target.ignore_index is not None,
        } if uses_target else None,
        "uses_row_length": uses_row_length,
        "loops": final is not None or any(st["accumulators"] for st in stages),
        "gathers_at_index": any(not g["row_level"] for st in stages for g in st["gathers"]),
        "slots": max([sum(len(a["slots"]) for a in st["accumulators"]) for st in stages], default=0),
    }
    return context, program.arguments(), outputs, traffic


def _rowwise(loss, variant, dialect, form):
    forward, backward, residuals = _rowwise_programs(loss, variant)
    f_context, f_inputs, f_outputs, f_traffic = _rowwise_kernel(loss, forward, dialect, form, "forward", residuals)
    b_context, b_inputs, b_outputs, b_traffic = _rowwise_kernel(loss, backward, dialect, form, "backward", residuals)
    return (
        ("rowwise.j2", f_context, f_inputs, f_outputs, f_traffic),
        ("rowwise.j2", b_context, b_inputs, b_outputs, b_traffic),
    )


# ---------------------------------------------------------------- assembly

def _variant_forms(loss):
    if loss.kind == "elementwise":
        return [None]
    return ["indices"] + (["probabilities"] if any(t.probabilities for t in loss.class_targets) else [])


def kernels(loss, variants, templates):
    """Every kernel of ``loss``: a :class:`VariantKernels` per variant and target form."""
    env = _environment(templates)
    header = headers(templates)
    result = []
    for variant in variants:
        for form in _variant_forms(loss):
            suffix = variant.suffix + (f"_{form}" if form else "")
            shown = variant.suffix + (f"_{form}" if form and loss.class_targets else "")
            per_backend = {}
            for backend, dialect in BACKENDS.items():
                if loss.kind == "elementwise":
                    per_backend[backend] = _elementwise(loss, variant, dialect)
                else:
                    per_backend[backend] = _rowwise(loss, variant, dialect, form)
            built = []
            for direction, index in (("forward", 0), ("backward", 1)):
                sources = {}
                for backend in BACKENDS:
                    template, context, inputs, outputs, traffic = per_backend[backend][index]
                    title = f"{loss.name}{shown} {direction} ({loss.source})"
                    sources[backend] = env.get_template(f"gpu/{template}").render(
                        dialect=f"{backend}/dialect.j2", title=title, **context,
                    )
                digest = hashlib.sha256(
                    "\0".join(header[b] + sources[b] for b in BACKENDS).encode()
                ).hexdigest()[:12]
                name = f"losscc_{loss.name}{suffix}_{direction}_{digest}"
                loops = loss.kind == "elementwise" or context["loops"]
                built.append(Kernel(name, inputs, outputs, sources, traffic, loops))
            result.append(VariantKernels(suffix, built[0], built[1]))
    return result


__all__ = ["kernels", "headers", "Kernel", "VariantKernels", "Traffic", "ELEMENT_THREADS"]
