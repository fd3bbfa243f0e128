"""The ``linear_`` forms of losses of computed log-probabilities: of ``Sequence`` inputs (a preference loss
such as DPO) and of ``Contrastive`` inputs (CLIP, InfoNCE).

A sequence's log-probability is made from its hidden states through the head
(``_linear.sequence_log_probs``: minus the sum, or mean, of its tokens' cross
entropy, the ``linear_`` form of the token loss the spec names); a query's of
its own key, from two batches of embeddings, the keys as the head
(``_linear.contrastive_log_probs``). Then the loss is the spec's own of those
values. Its gradients are the token loss's derived ones, times the loss's
derived ones per value.
"""

from __future__ import annotations

from ... import describe
from ..source import docstring


def sequence_form(loss):
    """What the template needs for ``linear_<loss>`` of a loss of Sequence inputs."""
    sequences = loss.sequences
    signature = describe.signature(loss)
    given = {s.name for s in sequences}
    args = [(f"{s.prefix}_hidden", None) for s in sequences] + [("weight", None)]
    args += [(f"{s.prefix}_labels", None) for s in sequences]
    args += [(name, default) for name, default in signature if name not in given]
    args += [("ignore_index", "-100"), ("bias", "None"), ("softcap", "None"), ("chunk_size", "None"),
             ("class_chunk_size", "None"), ("compute_nll_loss", repr(loss.nll)), ("alpha", "1.0")]
    token_loss = sequences[0].token_loss
    return {
        "kind": "sequences",
        "token_loss": token_loss,
        "signature": ", ".join(n if d is None else f"{n}={d}" for n, d in args),
        "made": _targets([s.name for s in sequences]),
        "sequences": "[" + ", ".join(
            f'("{s.prefix}", {s.prefix}_hidden, {s.prefix}_labels, {s.average})' for s in sequences) + "]",
        "call": ", ".join(f"{n}={n}" for n, _ in signature if n != "*"),
        "docstring": docstring(_describe(loss, token_loss), indent="    "),
    }


def _targets(names):
    """The left side of an assignment from a list of ``names``' length."""
    return ", ".join(names) + ("," if len(names) == 1 else "")


def _describe(loss, token_loss):
    sequences = loss.sequences
    chosen = sequences[0]
    lines = [
        f"``{loss.name}`` of sequences given as hidden states through a head, never holding their logits whole.",
        "",
        f"{' and '.join(f'``{s.name}``' for s in sequences)} {'is' if len(sequences) == 1 else 'are each'} made"
        " from its sequences' hidden states and",
        f"labels: minus the {'mean' if chosen.average else 'sum'} of its tokens' ``{token_loss}`` over the tokens",
        "whose label is not ``ignore_index`` (the log-probability of the labels), every token through",
        f"``linear_{token_loss}`` at once (one pass over the head, in chunks; float32 sums). Then the loss",
        f"is ``{loss.name}`` of them, with the same parameters and semantics.",
        "",
        "Args:",
    ]
    for s in sequences:
        kind = "mean" if s.average else "sum"
        lines += [f"    {s.prefix}_hidden (array): The features of each token of the {s.prefix} sequences,",
                  "        ``(..., tokens, features)``.",
                  f"    {s.prefix}_labels (array of int): Each token's label, ``(..., tokens)``; its log-probabilities'",
                  f"        {kind} is ``{s.name}``."]
    lines += [
        "    weight (array or layer): The head, ``(classes, features)``, or its layer (as"
        f" ``linear_{token_loss}``'s).",
        "    ignore_index (int, optional): Tokens with this label count for nothing (a prompt's, padding).",
        "        Default: ``-100``.",
        "    bias (array, optional): One per class. Default: ``None``.",
        f"    softcap, chunk_size, class_chunk_size: as ``linear_{token_loss}``'s.",
        f"    compute_nll_loss (bool, optional): Add ``alpha`` times the mean ``{token_loss}`` of every",
        f"        kept token of the {chosen.prefix} sequences (for reduction 'mean' or 'sum'). Default:"
        f" ``{loss.nll}``.",
        "    alpha (float, optional): The weight of that term. Default: ``1.0``.",
        f"    The others: as ``{loss.name}``'s.",
        "",
        "Returns:",
        "    array: The computed loss.",
    ]
    return "\n".join(lines)


def contrastive_form(loss):
    """What the template needs for ``linear_<loss>`` of a loss of Contrastive inputs."""
    contrastives = loss.contrastives
    first = contrastives[0]
    given = {c.name for c in contrastives}
    embeddings = list(dict.fromkeys(n for c in contrastives for n in (c.queries, c.keys)))
    args = [(name, None) for name in embeddings]
    if first.scale is not None:
        args.append((first.scale.name, repr(first.scale.default)))
    # no group: a mean over ranks would need every rank's keys (an all-gather), which this form does not make
    args += [(name, default) for name, default in describe.signature(loss) if name not in given and name != "group"]
    args += [("chunk_size", "None"), ("class_chunk_size", "None")]
    scale = first.scale.name if first.scale is not None else "1.0"
    return {
        "kind": "contrastive",
        "token_loss": first.token_loss,
        "signature": ", ".join(n if d is None else f"{n}={d}" for n, d in args),
        "made": _targets([c.name for c in contrastives]),
        "pairs": "[" + ", ".join(f'("{c.queries}", {c.queries}, "{c.keys}", {c.keys})' for c in contrastives) + "]",
        "scale": f'{scale}, {first.scale.name if first.scale is not None else "scale"!r}, {first.divide}, '
                 f"{first.normalize}, {first.views}",
        "call": ", ".join(f"{n}={n}" for n, _ in describe.signature(loss) if n not in ("*", "group")),
        "docstring": docstring(_describe_contrastive(loss), indent="    "),
    }


def _describe_contrastive(loss):
    contrastives = loss.contrastives
    first = contrastives[0]
    scaled = ("``queries @ keys.T``" if first.scale is None
              else f"``queries @ keys.T {'/' if first.divide else '*'} {first.scale.name}``")
    normalized = " of the L2-normalised embeddings (cosine similarities)" if first.normalize else ""
    lines = [
        f"``{loss.name}`` of two batches of embeddings, never holding their similarity matrix whole.",
        "",
        f"{' and '.join(f'``{c.name}``' for c in contrastives)} {'is' if len(contrastives) == 1 else 'are each'}"
        " made from the embeddings: each query's log-probability",
        *([f"of its own key (the same row of the other view) among every other embedding of both views",
           f"(its own left out, SimCLR's NT-Xent), the rows of {scaled.replace('keys', '[queries; keys]')}{normalized}:",
           f"minus their ``{first.token_loss}``, through ``linear_{first.token_loss}`` with both views as its head and",
           f"each query's own row ``excluded`` (in chunks of queries). Then the loss is ``{loss.name}`` of them."]
          if first.views else
          [f"of its own key (the same row) among all keys, the rows of {scaled}{normalized}: minus",
           f"their ``{first.token_loss}`` against the diagonal, through ``linear_{first.token_loss}`` with the keys as its",
           f"head (in chunks of queries and blocks of keys). Then the loss is ``{loss.name}`` of them."]),
        "",
        "Args:",
    ]
    for name in dict.fromkeys(n for c in contrastives for n in (c.queries, c.keys)):
        roles = [f"the {role} of ``{c.name}``" for c in contrastives
                 for role, of in (("queries", c.queries), ("keys", c.keys)) if of == name]
        lines.append(f"    {name} (array): ``(batch, features)``: {', '.join(roles)}.")
    if first.scale is not None:
        lines += [f"    {first.scale.name} (float or array): {first.scale.doc or 'The scale of the similarities.'}"
                  f" Default: ``{first.scale.default}``."]
    lines += [
        f"    chunk_size, class_chunk_size: as ``linear_{first.token_loss}``'s (its tokens are the queries, its"
        " classes the keys).",
        f"    The others: as ``{loss.name}``'s.",
        "",
        "Returns:",
        "    array: The computed loss.",
    ]
    return "\n".join(lines)
