"""The ``linear_`` form of a loss of ``Sequence`` inputs (a preference loss such as DPO).

Each sequence's log-probability is made from its hidden states through the
head (``_linear.sequence_log_probs``: minus the sum, or mean, of its tokens'
cross entropy, the ``linear_`` form of the token loss the spec names), then
the loss is the spec's own of those values. Its gradients are the token
loss's derived ones, times the loss's derived ones per sequence.
"""

from __future__ import annotations

from ... import describe
from ..source import docstring


def sequence_form(loss):
    """What the template needs for ``linear_<loss>`` of a loss of Sequence inputs (None for other losses)."""
    sequences = loss.sequences
    if not sequences:
        return None
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
        "made": ", ".join(s.name for s in sequences),
        "sequences": "[" + ", ".join(
            f'("{s.prefix}", {s.prefix}_hidden, {s.prefix}_labels, {s.average})' for s in sequences) + "]",
        "call": ", ".join(f"{n}={n}" for n, _ in signature if n != "*"),
        "docstring": docstring(_describe(loss, token_loss), indent="    "),
    }


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
