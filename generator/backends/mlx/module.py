"""The MLX backend's module of one loss: ``<loss>.py`` in the package, rendered from ``templates/mlx/loss.py.j2``.

The public function checks its arguments, picks the variant (flags, target
form) and runs either the loss's kernels (on a GPU) or the MLX bodies that
``programs`` prints, wired to MLX's transformations by ``mx.custom_function``.
"""

from __future__ import annotations

from ... import describe
from ...spec.vocabulary import HEAD_NAMES, TEMPERATURE_NAME, ClassTarget, ClassWeights, Flag, Input, RowMax
from ..source import docstring, header
from . import lattice
from .programs import context
from .sequences import contrastive_form, sequence_form


def _describe(loss, variants):
    """The docstring of the public function: the spec's doc, math, args."""
    parts = [loss.doc.strip() or f"The {loss.name} loss.", ""]
    for variant in variants:
        title = describe.variant_title(variant)
        parts.append(f"Loss{f' ({title})' if title else ''}:")
        parts += ["", ".. math::", ""] + [f"    {line}" for line in describe.formula_lines(loss, variant)] + [""]
        parts.append("Gradient (derived symbolically, per unit cotangent):")
        parts += ["", ".. math::", ""] + [f"    {line}" for line in describe.gradient_lines(loss, variant)] + [""]
    parts += ["Kinks: " + describe.kinks_text(loss), ""]
    parts.append("Args:")
    parts += [f"    {line}" for line in describe.argument_docs(loss)]
    parts += ["", "Returns:", "    array: The computed loss."]
    return "\n".join(parts)


def _checks(loss):
    """The argument checks at the top of the public function.

    Every name printed here is a checked identifier (generator.spec), every
    number a plain int or float; the messages live in the runtime.
    """
    first = loss.inputs[0].name
    lines = _array_checks(loss) + ["rt.check_reduction(reduction)"] + _param_checks(loss) + _shape_checks(loss)
    loss_shape = f"rt.drop_axis({first}.shape, axis)" if loss.kind == "rowwise" else f"{first}.shape"
    for item in loss.inputs:
        if isinstance(item, Input) and item.per_row:
            lines.append(f'rt.check_shape("{item.name}", {item.name}, {loss_shape})')
    lines += _target_checks(loss, loss_shape)
    if loss.weights is not None:
        w = loss.weights.name
        lines += [f"if {w} is not None:", f'    {w} = rt.check_weights({w}, {loss_shape}, "{w}")']
    return lines


def _array_checks(loss):
    lines = []
    for item in loss.inputs:
        if isinstance(item, (ClassTarget, ClassWeights)):
            continue
        # Integers are taken as MLX takes them (computed in float32), so the floating check is for probabilities.
        lines.append(f'{item.name} = rt.check_array("{item.name}", {item.name})')
    return lines


def _param_checks(loss):
    lines = []
    for p in loss.params:
        if isinstance(p, Flag):
            lines.append(f'rt.check_flag("{p.name}", {p.name})')
        else:
            r = p.range
            check = (
                f'rt.check_param("{p.name}", {p.name}, {_bound(r.low)}, {_bound(r.high)}, '
                f"{r.low_open}, {r.high_open}, {p.integer})"
            )
            assign = f"{p.name} = {check}"
            lines += [f"if {p.name} is not None:", f"    {assign}"] if p.optional else [assign]
    return lines


def _shape_checks(loss):
    """Element inputs broadcast (or checked equal), then the axis, then class weights laid along it."""
    first = loss.inputs[0].name
    lines = []
    element = [i.name for i in loss.inputs if isinstance(i, Input) and not i.per_row and not isinstance(i, ClassWeights)]
    if len(element) > 1:
        named = ", ".join(f'("{n}", {n})' for n in element)
        if loss.broadcast:
            lines.append(f"{', '.join(element)} = rt.broadcast({named})")
        else:
            lines.append(f"rt.check_same_shapes({named})")
    if loss.kind == "rowwise":
        # After broadcasting: the axis counts in the broadcast shape, as in MLX.
        lines.append(f'axis = rt.check_axis(axis, "{first}", {first}.ndim)')
    class_axis = "axis" if loss.kind == "rowwise" else "-1"
    for item in loss.inputs:
        if isinstance(item, ClassWeights):
            lines.append(f'{item.name} = rt.class_weights("{item.name}", {item.name}, {first}, {class_axis})')
    return lines


def _target_checks(loss, loss_shape):
    """Class targets: indices of the loss's shape, or (where allowed) probabilities of the input's."""
    first = loss.inputs[0].name
    lines = ['form = "indices"'] if loss.kind == "rowwise" else []
    for target in loss.class_targets:
        t = target.name
        indices = f'{t} = rt.check_indices("{t}", {t}, "{first}", {first}, {loss_shape}, {target.probabilities})'
        if target.probabilities:
            lines += [
                f'{t} = rt.check_array("{t}", {t})',
                f"if {t}.ndim == {first}.ndim:",
                f'    {t} = rt.check_array("{t}", {t}, floating=True)',
                f'    rt.check_same_shapes(("{t}", {t}), ("{first}", {first}))',
                '    form = "probabilities"',
                "else:",
                f"    {indices}",
            ]
        else:
            lines.append(indices)
    return lines


def _bound(value):
    return {float("inf"): "math.inf", float("-inf"): "-math.inf"}.get(value, repr(value))


def _variant_expr(loss):
    parts = [f'("_{f.name}" if {f.name} else "_no_{f.name}")' for f in loss.flags]
    if loss.kind == "rowwise":
        parts.append('"_" + form')
    return " + ".join(parts) if parts else '""'


def has_linear_form(loss):
    """Whether the loss has a ``linear_`` form: a row-wise loss of logits over classes (class targets), of
    two distributions given as log probabilities (a distillation loss: a student's head and a teacher's), of
    Sequence inputs (a preference loss: sequences' hidden states through a head), or of Contrastive inputs (two
    batches of embeddings, each the other's head)."""
    return linear_kind(loss) is not None


def linear_on_blocks(loss):
    """Whether the ``linear_`` form's backward may run on blocks of the classes: a class loss's, but not
    where it compares logits with their row's maximum. A tile's logits, made by a matmul of another shape
    than the forward's chunk, may round otherwise (on a GPU), and no element would equal the maximum."""
    return linear_kind(loss) == "classes" and not loss.formula.has(RowMax)


def linear_kind(loss):
    """"classes", "distillation", "sequences" or "contrastive": what the loss's ``linear_`` form takes; None where
    it has none."""
    if loss.sequences:
        return "sequences"
    if loss.contrastives:
        return "contrastive"
    if loss.kind != "rowwise":
        return None
    if loss.class_targets and loss.inputs[0].domain != "log_probabilities":
        return "classes"
    if (len(loss.inputs) == 2 and not loss.class_targets and loss.weights is None
            and all(getattr(i, "domain", None) == "log_probabilities" for i in loss.inputs)):
        return "distillation"
    return None


def exported(loss):
    """The public functions of the loss's module."""
    return [loss.name] + ([f"linear_{loss.name}"] if has_linear_form(loss) else [])


def _linear(loss):
    """What the template needs for ``linear_<loss>``: the loss of ``hidden @ weight.T + bias``."""
    kind = linear_kind(loss)
    if kind is None:
        return None
    if kind == "sequences":
        return sequence_form(loss)
    if kind == "contrastive":
        return contrastive_form(loss)
    signature = describe.signature(loss)
    # the head's names; a loss with arguments of those names (multi_margin_loss's class ``weight``) says head_
    head, bias = ("weight", "bias") if not {n for n, _ in signature} & HEAD_NAMES else ("head_weight", "head_bias")
    heads = {loss.inputs[0].name: [("hidden", None), (head, None)]}
    if kind == "distillation":
        heads[loss.inputs[1].name] = [("teacher_hidden", None), ("teacher_weight", None)]
    args = []
    for name, default in signature:
        if name in heads:
            args += heads[name]
        elif name != "axis":
            args.append((name, default))
    if ("*", None) not in args:
        args.append(("*", None))
    params = [p.name for p in loss.params]
    if kind == "distillation":
        args += [(bias, "None"), ("teacher_bias", "None")]
        # the logits of both heads are divided by it (where the spec has its own, the spec's is passed on)
        temperature = TEMPERATURE_NAME not in {n for n, _ in signature}
        args += [(TEMPERATURE_NAME, "1.0")] if temperature else []
        args += [("softcap", "None"), ("chunk_size", "None")]
    else:
        temperature = False
        args += [(bias, "None"), ("softcap", "None"), ("chunk_size", "None"), ("class_chunk_size", "None"),
                 ("return_logsumexp", "False"), ("excluded", "None")]
    class_weights = [i.name for i in loss.inputs if isinstance(i, ClassWeights)]
    rows = [i.name for i in loss.inputs[1:] if not isinstance(i, ClassWeights)] if kind == "classes" else []
    differentiable = [i.name for i in loss.inputs if i.differentiable]
    # class weights as given (the checks lay them along the class axis)
    keywords = [f"{w}={w}.reshape(-1)" for w in class_weights] + [f"{p}={p}" for p in params]
    logits = [i.name for i in loss.inputs[:2 if kind == "distillation" else 1]]
    return {
        "kind": kind,
        "signature": ", ".join(n if d is None else f"{n}={d}" for n, d in args),
        "head": head,
        "bias": bias,
        "logits": logits,  # the loss's inputs the heads give
        "temperature": temperature,
        "rows": rows,  # the per-token arrays, cut with the tokens
        # the backward may run on blocks of the classes (``linear_loss`` tries whether it does), the
        # per-class arrays cut to each block
        "blocks": linear_on_blocks(loss),
        "block_inputs": [f"axis.cut({i.name})" if isinstance(i, ClassWeights) else i.name for i in loss.inputs],
        # what a block's backward returns: the gradients of its logits and of each row array (None: none)
        "block_gradients": ["grads[0]"] + [f"grads[{differentiable.index(r)}]" if r in differentiable else "None"
                                           for r in rows],
        # the arguments of the loss on the logits, but its reduction
        "call": ", ".join(logits + rows + keywords + ["axis=-1"]),
        # the same, each token's excluded class masked out of its logits (``excluded=``)
        "masked_call": ", ".join([f"_linear.without({logits[0]}, excluded)"] + logits[1:] + rows + keywords + ["axis=-1"]),
        "docstring": docstring(_describe_linear(loss, kind, head, bias, temperature), indent="    "),
    }


def _describe_linear(loss, kind, head, bias, temperature):
    first = loss.inputs[0].name
    if kind == "distillation":
        return _describe_distillation(loss, head, bias, temperature)
    return "\n".join([
        f"``{loss.name}`` of the {first} ``hidden @ {head}.T + {bias}`` (classes last), never holding them whole.",
        "",
        f"The same loss, parameters and semantics as ``{loss.name}`` on those {first} (its ``axis`` is",
        "their last), computed chunk by chunk of tokens: the forward keeps each chunk's losses, the",
        f"backward makes each chunk's {first} again and takes the loss's derived gradient there, then",
        f"the gradients of ``hidden``, ``{head}`` and ``{bias}`` (``{head}``'s and ``{bias}``'s summed in",
        f"float32). Half-precision ``hidden`` and ``{head}`` give the logits the matmul rounds, as the",
        f"unfused ``{loss.name}(hidden @ {head}.T + {bias}, ...)`` would, and the loss is then computed",
        "in float32. MLX's jvp and vmap, and parameters given as arrays, take the unfused composition.",
        "",
        "Args:",
        "    hidden (array): The features of each token, ``(..., features)``.",
        f"    {head} (array or layer): The head: one row of ``features`` per class, ``(classes, features)``;",
        "        or the layer that holds it: ``nn.Linear`` (its bias too), ``nn.Embedding`` (a tied head),",
        "        or their quantized forms (frozen: their integers get zero gradients, their scales and",
        "        biases exact ones, computed only when asked for).",
        f"    {bias} (array, optional): One per class. Default: ``None``.",
        f"    class_group (mx.distributed.Group, optional): The head is split across the group's ranks by",
        f"        classes: each holds its rows of ``{head}`` (and ``{bias}``), in rank order; the loss is",
        "        that of the whole vocabulary, hidden's gradient the whole one (summed over the ranks),",
        f"        ``{head}``'s this rank's rows of it. Default: ``None``.",
        f"    softcap (float, optional): Soft-cap the {first}: ``softcap * tanh({first} / softcap)``",
        "        (Gemma 2). Default: ``None``, no cap.",
        "    chunk_size (int, optional): Tokens in one chunk. Default: ``None``, as many as make about",
        "        a million logits.",
        "    class_chunk_size (int, optional): Classes in one block of the backward's tiles, where the",
        "        loss's backward reads its per-row values alone (else the backward takes the tokens chunk by",
        "        chunk, as the forward does). Each tile, a block by a chunk of tokens, makes its logits again;",
        "        the weight's gradient is summed a block at a time. Default: ``None``, as many as make a",
        "        quarter of a chunk's logits with every token, but at least 256.",
        "    return_logsumexp (bool, optional): Also return each token's logsumexp of the (capped)",
        f"        {first}, float32, shaped as the tokens (for logging a z-loss). Default: ``False``.",
        "    excluded (array of int, optional): A class per token left out of its row: its logit is -inf",
        "        (SimCLR's NT-Xent leaves out each embedding's similarity to itself). Shaped as the tokens.",
        "        Default: ``None``.",
        f"    The others: as ``{loss.name}``'s.",
        "",
        "Returns:",
        "    array: The computed loss; with ``return_logsumexp``, ``(loss, logsumexp)``.",
    ])


def _describe_distillation(loss, head, bias, temperature):
    student, teacher = (i.name for i in loss.inputs)
    scaled = "``log_softmax(logits / temperature)``" if temperature else "``log_softmax(logits)``"
    return "\n".join([
        f"``{loss.name}`` between a student's head and a teacher's, never holding either's logits whole.",
        "",
        f"``{loss.name}({student}, {teacher})`` with ``{student}`` the student's {scaled} of",
        f"``hidden @ {head}.T + {bias}`` and ``{teacher}`` the teacher's of ``teacher_hidden @",
        "teacher_weight.T + teacher_bias`` (classes last), computed chunk by chunk of tokens: the",
        "backward makes each chunk's logits again and takes the loss's derived gradient there.",
        "The teacher's gradients are exact too, computed only when asked for: a frozen teacher costs",
        "nothing more, and a trained one holds each chunk's gradient of its logits until the last.",
        "MLX's jvp and vmap take the unfused composition.",
        "",
        "Args:",
        "    hidden (array): The student's features of each token, ``(..., features)``.",
        f"    {head} (array or layer): The student's head, ``(classes, features)``, or its layer.",
        "    teacher_hidden (array): The teacher's features of each token, ``(..., teacher_features)``.",
        "    teacher_weight (array or layer): The teacher's head, ``(classes, teacher_features)``, or",
        "        its layer.",
        f"    {bias}, teacher_bias (array, optional): One per class. Default: ``None``.",
        "    class_group (mx.distributed.Group, optional): Both heads are split across the group's ranks by",
        f"        classes, alike: each holds its rows of ``{head}`` and ``teacher_weight`` (and biases), in rank",
        "        order; the loss is that of the whole vocabulary, the hidden states' gradients the whole",
        "        ones (summed over the ranks), the heads' this rank's rows of them. Default: ``None``.",
        *(["    temperature (float, optional): Both heads' logits are divided by it (no temperature**2",
           "        factor). Default: ``1.0``."] if temperature else []),
        "    softcap (float, optional): Soft-cap both heads' logits: ``softcap * tanh(logits / softcap)``,",
        "        before the temperature. Default: ``None``, no cap.",
        "    chunk_size (int, optional): Tokens in one chunk. Default: ``None``, as many as make about",
        "        a quarter of a million logits a head.",
        f"    The others: as ``{loss.name}``'s.",
        "",
        "Returns:",
        "    array: The computed loss.",
    ])


def module_path(name):
    """Where the MLX module of the loss ``name`` lies in the package."""
    return f"{name}.py"


def render(env, loss, variants):
    """The source of the package's ``<loss>.py``: the public function, its checks and the MLX path.

    ``variants`` are ``derive(loss)``'s; the module dispatches to the loss's
    kernels (``kernels/<loss>.py``) on a GPU and runs the printed MLX bodies elsewhere.
    A recurrence loss's module is ``lattice``'s (``variants`` is then its derived lattice).
    """
    if loss.kind == "recurrence":
        return lattice.render(env, loss, variants, _param_checks(loss))
    ignore = next((t for t in loss.class_targets if t.ignore_index is not None), None)
    signature = ", ".join(n if d is None else f"{n}={d}" for n, d in describe.signature(loss))
    return env.get_template("mlx/loss.py.j2").render(
        name=loss.name,
        header=header(loss.source),
        docstring=docstring(f"{loss.name}: generated from {loss.source}.\n\n{loss.doc.strip()}"),
        public_docstring=docstring(_describe(loss, variants), indent="    "),
        signature=signature,
        rowwise=loss.kind == "rowwise",
        inputs=[i.name for i in loss.inputs],
        params=[p.name for p in loss.params],
        # optional params (an ignore_index) are not in the formula: the compiled bodies never see them
        numeric_params=[p.name for p in loss.numeric_params if not p.optional],
        # the parameters that may be given as arrays, differentiably
        float_params=[p.name for p in loss.numeric_params if not p.optional and not p.integer],
        # the kernels read every numeric parameter by its position, an optional one too (None reads 0)
        kernel_params=[p.name for p in loss.numeric_params],
        # the kernels read every array element by element: class weights are broadcast to the first input
        kernel_inputs=[
            f"mx.broadcast_to({i.name}, {loss.inputs[0].name}.shape)" if isinstance(i, ClassWeights) else i.name
            for i in loss.inputs
        ],
        has_weights=loss.weights is not None,
        weights_name=loss.weights.name if loss.weights is not None else None,  # the public name; the core says weights
        ignore={"target": ignore.name, "param": ignore.ignore_index.name} if ignore else None,
        checks=_checks(loss),
        linear=_linear(loss),
        variant_expr=_variant_expr(loss),
        **context(loss, variants, linear_on_blocks(loss)),
    )


def package_files(env, names):
    """The files the MLX backend adds to the package once: its runtime and ``__init__.py`` importing ``names``
    (``(module, its public functions)`` each)."""
    return {
        "_runtime.py": env.get_template("mlx/_runtime.py.j2").render(header=header("templates/mlx/_runtime.py.j2")),
        "_linear.py": env.get_template("mlx/_linear.py.j2").render(header=header("templates/mlx/_linear.py.j2")),
        "_distributed.py": env.get_template("mlx/_distributed.py.j2").render(
            header=header("templates/mlx/_distributed.py.j2")),
        "_lattice.py": env.get_template("mlx/_lattice.py.j2").render(header=header("templates/mlx/_lattice.py.j2")),
        "__init__.py": env.get_template("mlx/__init__.py.j2").render(header=header("specs/"), names=names),
    }
