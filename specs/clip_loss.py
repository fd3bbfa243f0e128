"""The CLIP loss (Radford et al. 2021): a symmetric InfoNCE between two batches of paired embeddings.

As open_clip's ``ClipLoss`` and Hugging Face's ``clip_loss``: the similarity
of each image to each text is ``logit_scale * image @ text.T``; each image's
cross entropy against its own text, and each text's against its own image,
averaged. ``linear_clip_loss`` takes the (normalised) embeddings and never
holds the batch-by-batch similarities; the loss takes each direction's
log-probabilities of the right pair.
"""

from generator.spec import Contrastive, Loss, Param

logit_scale = Param("logit_scale", 1.0, range="(0, inf)",
                    doc="The similarities' multiplier: exp of CLIP's learnable log scale (it starts at 1/0.07); "
                        "an array is differentiated.")
image_to_text = Contrastive("image_to_text_logps", queries="image_embeds", keys="text_embeds", scale=logit_scale,
                            doc="Each image's log-probability of its own text among the batch's texts.")
text_to_image = Contrastive("text_to_image_logps", queries="text_embeds", keys="image_embeds", scale=logit_scale,
                            doc="Each text's log-probability of its own image among the batch's images.")

spec = Loss(
    "clip_loss",
    inputs=[image_to_text, text_to_image],
    reduction="mean",
    doc="Computes the CLIP loss -(log p(text | image) + log p(image | text)) / 2 of each pair, the probabilities a "
        "softmax of the scaled similarities over the batch.",
    elementwise=-(image_to_text + text_to_image) / 2,
)
