"""Fine-tune a small llama with mlx-lm's trainer, the loss taken by linear_cross_entropy.

mlx-lm's `mlx_lm.tuner.trainer.train` takes a `loss=` function. Its default
makes the logits `(batch, tokens, vocabulary)` and takes the cross entropy
of every token; the loss here takes the model's last hidden state and its
head (`lm_head`, or the embedding where the model ties them) and never makes
the logits whole (`linear_cross_entropy`, chunks of tokens). Both runs start
from the same weights (built in code: nothing is downloaded) and see the same
batches; the script prints both loss curves, checks that they agree (exit
status 1 otherwise) and prints the trainer's peak memory of each. Needs the
`lm` extra (mlx-lm). Run from the repository root:

    python -m examples.finetune_linear_loss
    python -m examples.finetune_linear_loss --vocabulary 128000 --iterations 40
    python -m examples.finetune_linear_loss --tied    # the head is the token embedding

At the defaults (vocabulary 32000, 4 x 128 tokens a step, bfloat16) on the project's CPU the
trainer's peak memory was 181 MB with the stock loss and 94 MB with linear_cross_entropy.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim

import generated
from examples.curves import curves_agree

# bfloat16 models: the stock loss computes in bfloat16, linear_cross_entropy in float32 (on the same
# bfloat16 logits), so the gradients differ by bfloat16 rounding and the curves drift apart slowly.
AGREEMENT = 2e-2


def linear_loss(model, batch, lengths):
    """mlx-lm's default_loss, its cross entropy of the logits taken from the hidden state and the head."""
    inputs, targets = batch[:, :-1], batch[:, 1:]
    hidden = model.model(inputs)
    head = model.lm_head if hasattr(model, "lm_head") else model.model.embed_tokens  # tied: the embedding
    steps = mx.arange(1, targets.shape[1] + 1)
    mask = mx.logical_and(steps >= lengths[:, 0:1], steps <= lengths[:, 1:])
    per_token = generated.linear_cross_entropy(hidden, head, targets) * mask
    tokens = mask.sum()
    return per_token.astype(mx.float32).sum() / tokens, tokens


class Curve:
    """An mlx-lm training callback that keeps the reported losses and peak memory."""

    def __init__(self):
        self.losses, self.peak_gb = [], 0.0

    def on_train_loss_report(self, info):
        self.losses.append(info["train_loss"])
        self.peak_gb = max(self.peak_gb, info["peak_memory"])

    def on_val_loss_report(self, info):
        pass


def synthetic_dataset(samples, length, vocabulary, seed):
    """Token sequences with a learnable pattern (each token follows from the one before), as mlx-lm takes them."""
    key = mx.random.key(seed)
    starts = mx.random.randint(0, vocabulary, (samples, 1), key=key)
    sequences = (starts + 7 * mx.arange(length)) % vocabulary
    return [(row, 0) for row in sequences.tolist()]


def train(loss, config, dataset, iterations, report_every, workdir):
    """The losses mlx-lm's trainer reports, and its peak memory (GB), for a fresh model trained with ``loss``."""
    from mlx_lm.models import llama
    from mlx_lm.tuner.trainer import TrainingArgs, default_loss
    from mlx_lm.tuner.trainer import train as mlx_lm_train

    mx.random.seed(0)
    model = llama.Model(llama.ModelArgs(**config))
    model.set_dtype(mx.bfloat16)
    curve = Curve()
    args = TrainingArgs(batch_size=4, iters=iterations, steps_per_report=report_every,
                        steps_per_eval=iterations + 1, steps_per_save=iterations + 1,
                        max_seq_length=len(dataset[0][0]), adapter_file=str(Path(workdir) / "adapters.safetensors"))
    mx.reset_peak_memory()
    mlx_lm_train(model, optim.Adam(learning_rate=1e-3), dataset, args=args,
                 loss=default_loss if loss is None else loss, training_callback=curve)
    return curve


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocabulary", type=int, default=32000)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--length", type=int, default=128, help="tokens a sequence")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--report-every", type=int, default=5)
    parser.add_argument("--tied", action="store_true", help="the head is the token embedding")
    options = parser.parse_args(argv)
    config = {"model_type": "llama", "hidden_size": options.hidden, "num_hidden_layers": options.layers,
              "intermediate_size": 2 * options.hidden, "num_attention_heads": 4, "num_key_value_heads": 4,
              "rms_norm_eps": 1e-5, "vocab_size": options.vocabulary, "tie_word_embeddings": options.tied}
    dataset = synthetic_dataset(options.samples, options.length + 1, options.vocabulary, seed=1)
    with tempfile.TemporaryDirectory() as workdir:
        stock = train(None, config, dataset, options.iterations, options.report_every, workdir)
        ours = train(linear_loss, config, dataset, options.iterations, options.report_every, workdir)
    print(f"{'step':>6} {'stock loss':>12} {'linear_cross_entropy':>22}")
    for index, (a, b) in enumerate(zip(stock.losses, ours.losses)):
        print(f"{(index + 1) * options.report_every:>6} {a:>12.4f} {b:>22.4f}")
    print(f"peak memory: stock {stock.peak_gb * 1e3:.1f} MB, linear_cross_entropy {ours.peak_gb * 1e3:.1f} MB")
    return curves_agree(stock.losses, ours.losses, AGREEMENT)


if __name__ == "__main__":
    sys.exit(main())
