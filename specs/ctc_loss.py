"""Connectionist temporal classification, CTC (Graves et al. 2006), as torch.nn.functional.ctc_loss.

A sequence's loss is minus the log of the probability of its labels summed
over every alignment of them to its frames: paths through the labels with a
blank before, between and after them, one state a frame, each frame staying,
moving on one state, or skipping a blank between two different labels. The
spec writes the forward (alpha) recursion; the generator derives the backward
(beta) recursion and the gradient.
"""

from sympy import And, Ne, Piecewise, oo

from generator.spec import Alignment, Flag, Loss, Param, logaddexp

blank = Param("blank", 0, range="[0, inf)", doc="The blank class's index.")
zero_infinity = Flag("zero_infinity", False,
                     doc="Whether infinite losses (a sequence with too few frames for its labels) and their "
                         "gradients are zeroed.")

paths = Alignment(
    "log_probs", "targets", "input_lengths", "target_lengths", separator=blank,
    docs={
        "log_probs": "Log-probabilities of the classes at each frame, ``(frames, sequences, classes)`` "
                     "(``(frames, classes)`` for one sequence), as from ``log_softmax``.",
        "targets": "Each sequence's labels, ``(sequences, labels)`` padded, or all sequences' labels one "
                   "after another (``(labels,)`` for one sequence). None may be the blank.",
        "input_lengths": "Each sequence's number of frames, ``(sequences,)`` (an array, list or tuple).",
        "target_lengths": "Each sequence's number of labels, ``(sequences,)``.",
    },
)

# A skip from the state two before (a label) over the blank between: only between two different labels.
skip = And(Ne(paths.label(0), blank), Ne(paths.label(0), paths.label(2)))
step = paths.emission + logaddexp(logaddexp(paths.previous(0), paths.previous(1)),
                                  Piecewise((paths.previous(2), skip), (-oo, True)))

spec = Loss(
    "ctc_loss",
    inputs=paths.inputs,
    params=[blank, zero_infinity],
    reduction="mean",
    doc="Computes the connectionist temporal classification loss: minus the log-probability of each "
        "sequence's labels, summed over their alignments to its frames.",
    recurrence=paths.recurrence(step, start=[0, 1], end=[-1, -2], zero_infinity=zero_infinity,
                                mean_per_label=True),
)
