"""InfoNCE (van den Oord et al. 2018) with in-batch negatives, on cosine similarities.

As the ``info-nce-pytorch`` package's ``InfoNCE`` without ``negative_keys``:
each query's positive is the key of its row, the other keys its negatives;
queries and keys are L2-normalised and the similarities divided by the
temperature. ``linear_info_nce_loss`` takes the embeddings and never holds the
batch-by-batch similarities; the loss takes each query's log-probability of
its positive.
"""

from generator.spec import Contrastive, Loss, Param

temperature = Param("temperature", 0.1, range="(0, inf)",
                    doc="The similarities are divided by it; an array is differentiated.")
query = Contrastive("query_logps", queries="query", keys="positive_key", scale=temperature, divide=True,
                    normalize=True, doc="Each query's log-probability of its positive key among the batch's keys.")

spec = Loss(
    "info_nce_loss",
    inputs=[query],
    reduction="mean",
    doc="Computes the InfoNCE loss -log p(positive | query), the probability a softmax of the cosine similarities "
        "over the batch's keys divided by the temperature.",
    elementwise=-query,
)
