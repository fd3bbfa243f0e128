"""The GPU backends: Metal and CUDA kernels lowered from the MLX path's scheduled IR.

Each variant of a loss (flags, target form) gets a forward and a backward
kernel. The statements are the ones ``lower.schedule`` gives the MLX printer;
here the C printer prints them once per backend and the templates in
``templates/gpu/`` lay them out, spelled by ``templates/gpu/<language>/dialect.j2``
and preceded by ``templates/gpu/<language>/header.j2`` (the ``losscc_*`` helpers).

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


from ...ir import INSIDE_ROW, ROW_LENGTH, ElementwiseIR
from ...lower.programs import elementwise_programs, rowwise_programs
from ...lower.residuals import recomputed
from ...lower.softmax import logsumexp_numerators, logsumexp_spelled_out, softmax_read_from_sums
from ...spec.vocabulary import ClassTarget, Input, Param
from ..source import environment
from .printer import CUDA, METAL, CPrinter, c_name, check_kernel_names, declaration, is_condition

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
    """One kernel: its name (with a hash of its source), its arguments and traffic, its Metal and CUDA body."""

    name: str
    inputs: list  # [(argument name, runtime key)]
    outputs: list  # [(argument name, runtime key)]
    sources: dict  # backend -> kernel body
    traffic: Traffic
    loops: bool = True  # whether its threads loop over the row (else one simdgroup per row is enough)


@dataclass
class VariantKernels:
    """The forward and the backward kernel of one variant."""

    suffix: str  # the variant's key in the generated module (flags, then the target form)
    forward: Kernel
    backward: Kernel


def headers():
    """The helper header of each backend (prepended to every kernel)."""
    env = environment()
    return {backend: env.get_template(f"gpu/{backend}/header.j2").render() for backend in BACKENDS}


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
    """What one kernel reads, computes and writes, printed for one backend.

    ``statements`` are all it computes, ``element`` the inputs that vary along
    the row (each element of an elementwise kernel): what varies with them,
    and what varies with nothing, orders its sums as the MLX path's.
    """

    def __init__(self, loss, dialect, statements, element):
        self.loss = loss
        element, scalars = set(element), set()
        for s in statements:
            free = s.expr.free_symbols
            if s.reduction is None and free & element:
                element.add(s.symbol)
            elif s.reduction is None and all(isinstance(f, Param) or f in scalars or f == ROW_LENGTH for f in free):
                scalars.add(s.symbol)
        self.printer = CPrinter(dialect, element=element, scalars=scalars)
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
    """The forward and the backward kernel of an elementwise variant: (template, context, inputs, outputs, traffic) each."""
    ir: ElementwiseIR = variant.ir
    forward, backward, _ = elementwise_programs(loss, ir)
    backward = recomputed(forward, backward)
    return _elementwise_forward(loss, forward, dialect), _elementwise_backward(loss, ir, forward, backward, dialect)


def _element_bytes(loss, symbols):
    return SCALAR_BYTES * sum(1 for i in loss.inputs if i in symbols)


def _elementwise_forward(loss, forward, dialect):
    weighted = loss.weights is not None
    f = _Program(loss, dialect, forward, loss.inputs)
    f_free = _free(forward)
    reads = f.element_reads(f_free, "i")
    if weighted:
        f.use("weights_in", "weights")
    f.use("meta", "meta")
    context = {
        "params": f.param_reads(f_free), "reads": reads, "lines": f.lines(forward), "weighted": weighted,
    }
    outputs = [("loss_out", "loss"), ("partial_out", "partial")]
    # With mean|sum (the figure's setting) a threadgroup writes one float per ELEMENT_THREADS elements.
    traffic = Traffic(
        _element_bytes(loss, f_free) + SCALAR_BYTES / ELEMENT_THREADS, 0, _element_bytes(loss, f_free), 0, 1,
    )
    return "elementwise_forward.j2", context, f.arguments(), outputs, traffic


def _elementwise_backward(loss, ir, forward, backward, dialect):
    weighted = loss.weights is not None
    f_free = _free(forward)
    b = _Program(loss, dialect, backward, loss.inputs)
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
    context = {
        "params": b.param_reads(b_free | (f_free if weighted else set())),
        "reads": reads, "lines": b.lines(backward), "writes": writes, "weighted": weighted,
        "forward_reads": forward_reads,
        "forward_lines": _Program(loss, dialect, forward, loss.inputs).lines(forward) if weighted else [],
    }
    written = SCALAR_BYTES * len(writes)
    traffic = Traffic(_element_bytes(loss, b_free) + written, 0, _element_bytes(loss, b_free) + written, 0, 1)
    return "elementwise_backward.j2", context, b.arguments(), outputs, traffic


# ---------------------------------------------------------------- row-wise

def _rowwise_programs(loss, variant, form):
    """The forward and backward programs the MLX path runs, the backward computing again what it read."""
    ir = variant.ir
    targets = {t.name for t in loss.class_targets}
    outputs = [(f"grad_{n}", e) for n, e in ir.element_gradients.items() if not (n in targets and form == "indices")]
    outputs += [(f"grad_{n}", e) for n, e in ir.row_gradients.items()]
    # a logsumexp of a row that needs its own maximum stays the kernels' running one (one pass over the row)
    forward, backward, _ = rowwise_programs(loss, ir, outputs, form,
                                            softmax_read_from_sums(ir.forward_reductions, running=True),
                                            logsumexp_numerators(ir.forward_reductions, running=True))
    forward = logsumexp_spelled_out(forward, ir.forward_reductions, running=True)
    backward = recomputed(forward, backward)
    residuals = [s.symbol for s in forward if s.reduction is not None and s.symbol in _free(backward)]
    return forward, backward, residuals


class _RowKernel:
    """One row-wise kernel laid out: a prologue per row, passes over the row, a last pass writing outputs.

    A value is per element (it varies along the row) or per row. A reduction
    in pass ``p`` needs values of stage <= ``p`` and gives a value of stage
    ``p + 1``; row values of a stage are computed after the pass that gives
    it. The bytes each part moves are counted as it is laid out.
    """

    def __init__(self, loss, statements, dialect, form, direction, residuals):
        self.loss, self.statements, self.form, self.direction = loss, statements, form, direction
        self.residuals = residuals  # read per row by the backward, written per row by the forward
        self.program = _Program(loss, dialect, statements, [
            i for i in loss.inputs if isinstance(i, ClassTarget) or not i.per_row])
        self.target = next(iter(loss.class_targets), None)
        self.onehot = f"{c_name(self.target.name)}_index" if self.target is not None and form == "indices" else None
        self.row_inputs = [i for i in loss.inputs if isinstance(i, Input) and i.per_row]
        self.free = _free(statements)
        self.element = set(i for i in loss.inputs if isinstance(i, ClassTarget) or not i.per_row)
        self.stage, self.pass_of = {}, {}
        for s in statements:
            level = max((self.stage.get(d, 0) for d in s.expr.free_symbols), default=0)
            if s.reduction is not None:
                self.pass_of[s.symbol] = level
                self.stage[s.symbol] = level + 1
            else:
                self.stage[s.symbol] = level
                if s.expr.free_symbols & self.element:
                    self.element.add(s.symbol)
        self.element_statements = [s for s in statements if s.symbol in self.element and s.reduction is None]
        self.row_statements = [s for s in statements if s.symbol not in self.element and s.reduction is None]
        self.passes = max(self.pass_of.values(), default=-1) + 1
        gathers_at_index = any(s.reduction is not None and s.reduction.kind == "gather" for s in statements)
        masked = INSIDE_ROW in self.free  # the row's outputs are selected on its class (lower.safety.masked_rows)
        self.uses_target = self.onehot is not None and (self.target in self.free or gathers_at_index or masked)
        self.element_read_bytes = 0
        self.row_bytes = 0
        self.read_in_loops = set()
        self.read_at_target = set()

    def bytes_of(self, symbols):
        return SCALAR_BYTES * sum(1 for i in self.loss.inputs if i in symbols and (
            not isinstance(i, ClassTarget) or self.form == "probabilities"))

    def loop_body(self, exprs, index="at"):
        """``(reads, lines, symbols)`` of one element of the row: what ``exprs`` need of it."""
        needed = _closure(self.element_statements, set().union(*(e.free_symbols for e in exprs)))
        symbols = set().union(*(e.free_symbols for e in exprs), *(s.expr.free_symbols for s in needed))
        return self.program.element_reads(symbols, index, self.onehot), self.program.lines(needed), symbols

    def row_lines(self, level):
        return self.program.lines([s for s in self.row_statements if self.stage[s.symbol] == level])

    def row_read(self, name, key):
        """Read one value per row (a per-row input, a residual, the cotangent)."""
        self.program.use(f"{name}_in", key)
        self.row_bytes += SCALAR_BYTES
        return f"const float {name} = static_cast<float>({name}_in[group]);"

    def prologue(self):
        """Once per row, before any pass: parameters, per-row values, row values of stage 0."""
        lines = self.program.param_reads(self.free)
        if self.uses_target:
            self.program.use(f"{c_name(self.target.name)}_in", f"input:{self.target.name}")
            self.row_bytes += SCALAR_BYTES
        lines += [self.row_read(c_name(i.name), f"input:{i.name}") for i in self.row_inputs if i in self.free]
        if self.direction == "backward":
            lines += [self.row_read(c_name(s.name), f"residual:{s.name}") for s in self.residuals]
            lines.append(self.row_read("cotangent", "cotangent"))
        return lines + self.row_lines(0)

    def pass_over_row(self, number):
        """The reductions of pass ``number``: accumulators over the row and gathers at the target."""
        reductions = [s for s in self.statements if s.reduction is not None and self.pass_of[s.symbol] == number]
        accumulators, gathers, looped = [], [], []
        for s in reductions:
            kind = s.reduction.kind
            if kind == "gather" and self.form == "indices":
                gathers.append(self.gather(s))
                continue
            looped.append(s.expr)
            accumulators.append({"symbol": c_name(s.name), "kind": kind, "value": self.program.printer.doprint(s.expr)})
        reads, lines, symbols = self.loop_body(looped) if looped else ([], [], set())
        self.element_read_bytes += self.bytes_of(symbols)
        self.read_in_loops |= symbols
        _assign_slots(accumulators)
        return {
            "number": number, "accumulators": accumulators, "reads": reads, "lines": lines,
            "gathers": gathers, "after": self.row_lines(number + 1),
        }

    def gather(self, statement):
        """The value at the target's class: one element read, no pass over the row."""
        value = self.program.printer.doprint(statement.expr)
        if not (statement.expr.free_symbols & self.element):
            # A row-level value is the same at every class.
            return {"symbol": c_name(statement.name), "reads": [], "lines": [], "value": value, "row_level": True}
        reads, lines, symbols = self.loop_body([statement.expr])
        self.row_bytes += self.bytes_of(symbols)
        self.read_at_target |= symbols
        return {"symbol": c_name(statement.name), "reads": reads, "lines": lines, "value": value, "row_level": False}

    def outputs(self):
        """``(final, outputs, element_writes, row_writes)``: the last pass (if any element is written) and the writes.

        The forward also writes its residuals, one value per row each.
        """
        element_outputs = [s for s in self.statements if s.output and s.symbol in self.element]
        row_outputs = [s for s in self.statements if s.output and s.symbol not in self.element]
        self.row_outputs = len(row_outputs)
        outputs, element_writes, row_writes = [], [], []
        final = None
        if element_outputs:
            reads, lines, symbols = self.loop_body([s.symbol for s in element_outputs])
            self.element_read_bytes += self.bytes_of(symbols)
            self.read_in_loops |= symbols
            final = {"reads": reads, "lines": lines}
        cast = "static_cast<T>" if self.direction == "backward" else ""
        for s in element_outputs:
            outputs.append((f"{c_name(s.name)}_out", f"grad:{s.name[len('grad_'):]}"))
            element_writes.append((f"{c_name(s.name)}_out", f"{cast}({c_name(s.name)})"))
        for s in row_outputs:
            key = "loss" if s.name == "loss" else f"grad:{s.name[len('grad_'):]}"
            outputs.append((f"{c_name(s.name)}_out", key))
            row_writes.append((f"{c_name(s.name)}_out", f"{cast}({c_name(s.name)})"))
        for symbol in self.residuals if self.direction == "forward" else []:
            name = c_name(symbol.name)
            outputs.append((f"{name}_out", f"residual:{symbol.name}"))
            row_writes.append((f"{name}_out", name))
        return final, outputs, element_writes, row_writes

    def traffic(self, element_writes, row_writes, final):
        """What the kernel moves against the least it could (call after ``outputs``)."""
        minimum_element = self.bytes_of(self.read_in_loops) + SCALAR_BYTES * len(element_writes)
        # An array only read at the target class needs one element per row, no pass over the row.
        least_row = self.bytes_of(self.read_at_target - self.read_in_loops) + SCALAR_BYTES * (
            sum(1 for i in self.row_inputs if i in self.free) + (1 if self.uses_target else 0)
            + (1 if self.direction == "backward" else 0) + self.row_outputs
        )
        return Traffic(
            self.element_read_bytes + SCALAR_BYTES * len(element_writes),
            self.row_bytes + SCALAR_BYTES * len(row_writes),
            minimum_element, least_row, self.passes + (1 if final else 0),
        )


def _assign_slots(accumulators):
    """Where each accumulator's partial values wait in threadgroup memory (a logsumexp keeps a max and a sum)."""
    slot = 0
    for a in accumulators:
        if a["kind"] == "logsumexp":
            a["slots"] = [(slot, f"acc_{a['symbol']}_max", "-losscc_inf()"),
                          (slot + 1, f"acc_{a['symbol']}_sum", "0.0f")]
        else:
            identity = "-losscc_inf()" if a["kind"] in ("max", "shift") else "0.0f"
            a["slots"] = [(slot, f"acc_{a['symbol']}", identity)]
        slot += len(a["slots"])


def _rowwise_kernel(loss, statements, dialect, form, direction, residuals):
    """The template context of one row-wise kernel, its arguments and its traffic."""
    kernel = _RowKernel(loss, statements, dialect, form, direction, residuals)
    prologue = kernel.prologue()
    stages = [kernel.pass_over_row(number) for number in range(kernel.passes)]
    final, outputs, element_writes, row_writes = kernel.outputs()
    kernel.program.use("meta", "meta")
    target = kernel.target
    context = {
        "direction": direction,
        "prologue": prologue,
        "stages": stages,
        "final": final,
        "element_writes": element_writes,
        "row_writes": row_writes,
        "target": {
            "index": kernel.onehot, "buffer": f"{c_name(target.name)}_in",
            "ignore": target.ignore_index is not None,
        } if kernel.uses_target else None,
        "uses_row_length": ROW_LENGTH in kernel.free or any(
            a["kind"] == "mean" for st in stages for a in st["accumulators"]),
        "loops": final is not None or any(st["accumulators"] for st in stages),
        "slots": max([sum(len(a["slots"]) for a in st["accumulators"]) for st in stages], default=0),
    }
    return context, kernel.program.arguments(), outputs, kernel.traffic(element_writes, row_writes, final)


def _rowwise(loss, variant, dialect, form):
    forward, backward, residuals = _rowwise_programs(loss, variant, form)
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


def kernels(loss, variants):
    """``derive(loss)``'s variants in, every kernel of ``loss`` out: a :class:`VariantKernels` per variant and target form.

    Raises a :class:`SpecError` where the kernels cannot name the spec's values apart.
    """
    check_kernel_names(loss)
    env = environment()
    header = headers()
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
                        dialect=f"gpu/{backend}/dialect.j2", title=title, **context,
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
