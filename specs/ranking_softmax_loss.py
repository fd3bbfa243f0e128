"""Ranking softmax loss (as optax.losses.ranking_softmax_loss): the listwise softmax cross entropy."""

from generator.spec import Input, Loss, LogSumExp, RowSum

logits = Input("logits", doc="The score of each item of a list.")
labels = Input("labels", differentiable=False,
               doc="The relevance label of each item (not differentiated). For optax's ``where``, give a masked item "
                   "a logit of -inf and a label of 0: it then contributes nothing (a list with no item left has "
                   "loss 0 and, unlike optax's, counts in ``'mean'``).")

spec = Loss(
    "ranking_softmax_loss",
    inputs=[logits, labels],
    axis=-1,
    reduction="mean",
    doc="Computes the ranking softmax loss -sum_i labels_i log softmax(logits)_i of each list.",
    row=RowSum(labels * (LogSumExp(logits) - logits)),
)
