"""NT-Xent, the normalised temperature-scaled cross entropy of SimCLR (Chen et al. 2020).

Two augmented views of each example of a batch: each embedding's positive is
the other view of the same example, its negatives every other embedding of
both views (its own similarity left out). The loss is the mean over all 2N
embeddings, as SimCLR's; ``linear_nt_xent_loss`` makes the log-probabilities
from the two batches of embeddings without the 2N x 2N similarity matrix.
"""

from generator.spec import Contrastive, Loss, Param

temperature = Param("temperature", 0.5, range="(0, inf)",
                    doc="The cosine similarities are divided by it; an array is differentiated.")
first = Contrastive("first_logps", queries="first_views", keys="second_views", scale=temperature, divide=True,
                    normalize=True, views=True,
                    doc="Each first view's log-probability of its second view among the 2N - 1 others.")
second = Contrastive("second_logps", queries="second_views", keys="first_views", scale=temperature, divide=True,
                     normalize=True, views=True,
                     doc="Each second view's log-probability of its first view among the 2N - 1 others.")

spec = Loss(
    "nt_xent_loss",
    inputs=[first, second],
    reduction="mean",
    doc="Computes the NT-Xent loss -(first_logps + second_logps) / 2 of each example: the mean over both views "
        "of minus the log-probability of the other view.",
    elementwise=-(first + second) / 2,
)
