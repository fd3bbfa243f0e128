"""``make bench``'s training-step section: a small llama trained a few steps in bfloat16.

The model is mlx-lm's llama (the ``bench`` extra), built in code from a config,
nothing downloaded; the step is mlx-lm's trainer's: ``nn.value_and_grad`` of its
default loss (cross entropy per token, summed in float32 over the tokens) and an
optimizer update, compiled with the model and optimizer state. Each class loss
trains a fresh model from the same seed on the same batches; reported: peak
memory of a step above what the model and optimizer hold, median step time, and
the loss curve (the generated cross_entropy's must follow mlx.nn.losses').
"""

from __future__ import annotations

import statistics
import time
from functools import partial

CONFIG = {"model_type": "llama", "hidden_size": 128, "num_hidden_layers": 2, "intermediate_size": 256,
          "num_attention_heads": 4, "num_key_value_heads": 4, "rms_norm_eps": 1e-5, "vocab_size": 32000,
          "tie_word_embeddings": False}
QUICK_CONFIG = {**CONFIG, "hidden_size": 32, "num_hidden_layers": 1, "intermediate_size": 64, "vocab_size": 512}
BATCH, SEQUENCE = 4, 128  # 512 tokens a step, as in the (512, 32000) logits
LOSSES = ("cross_entropy", "poly1_cross_entropy", "softmax_focal_loss")


def available():
    try:
        import mlx_lm.models.llama  # noqa: F401
    except ImportError:
        return False
    return True


def _batches(steps, vocab):
    import mlx.core as mx

    key = mx.random.key(7)
    tokens = mx.random.randint(0, vocab, (steps, BATCH, SEQUENCE + 1), key=key)
    return [(tokens[i, :, :-1], tokens[i, :, 1:]) for i in range(steps)]


def train(loss, config, batches):
    """Losses, step seconds and peak bytes per step of a fresh model trained with ``loss``."""
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim
    from mlx_lm.models import llama

    mx.random.seed(0)
    model = llama.Model(llama.ModelArgs(**config))
    model.set_dtype(mx.bfloat16)
    optimizer = optim.Adam(learning_rate=1e-3)

    def default_loss(model, inputs, targets):  # mlx_lm.tuner.trainer.default_loss, every token counted
        logits = model(inputs)
        per_token = loss(logits, targets, reduction="none")
        return per_token.astype(mx.float32).sum() / targets.size

    loss_and_grad = nn.value_and_grad(model, default_loss)
    state = [model.state, optimizer.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def step(inputs, targets):
        value, grads = loss_and_grad(model, inputs, targets)
        optimizer.update(model, grads)
        return value

    losses, seconds, peaks = [], [], []
    for inputs, targets in batches:
        mx.synchronize()
        held = mx.get_active_memory()
        mx.reset_peak_memory()
        start = time.perf_counter()
        value = step(inputs, targets)
        mx.eval(value, state)
        seconds.append(time.perf_counter() - start)
        peaks.append(max(mx.get_peak_memory() - held, 0))
        losses.append(value.item())
    return losses, seconds, peaks


def run(quick=False, steps=None, echo=print):
    """Every class loss (and mlx.nn.losses' cross_entropy) trained on the same batches."""
    import mlx.nn.losses as reference

    import generated

    config = QUICK_CONFIG if quick else CONFIG
    steps = steps or (3 if quick else 6)
    batches = _batches(steps, config["vocab_size"])
    runs = [("mlx.nn.losses.cross_entropy", reference.cross_entropy)]
    runs += [(f"losscc {name}", getattr(generated, name)) for name in LOSSES]
    results = []
    for label, loss in runs:
        losses, seconds, peaks = train(loss, config, batches)
        settled = slice(2, None) if len(seconds) > 2 else slice(None)  # the first two steps compile (then the optimizer's state exists)
        results.append({"loss": label, "losses": losses, "median_step_ms": statistics.median(seconds[settled]) * 1e3,
                        "peak_memory_bytes": max(peaks[settled])})
        echo(f"training {label:36s} step {results[-1]['median_step_ms']:.0f} ms, "
             f"peak {results[-1]['peak_memory_bytes'] / 2**20:.1f} MiB, losses {[round(v, 4) for v in losses]}")
    return {"config": config, "batch": BATCH, "sequence": SEQUENCE, "steps": steps, "dtype": "bfloat16",
            "results": results}


def curve_gap(report):
    """Largest difference between the generated cross_entropy's loss curve and mlx.nn.losses'."""
    by = {r["loss"]: r["losses"] for r in report["results"]}
    stock, ours = by["mlx.nn.losses.cross_entropy"], by["losscc cross_entropy"]
    return max(abs(a - b) for a, b in zip(stock, ours))


def markdown(report):
    config = report["config"]
    lines = [f"### training steps: llama (mlx-lm), {config['num_hidden_layers']} layers, hidden {config['hidden_size']}, "
             f"vocabulary {config['vocab_size']}, {report['batch']} x {report['sequence']} tokens, bfloat16", "",
             "| loss | median step ms | peak MiB a step | step ms / stock's | peak / stock's | loss curve |",
             "|---|---:|---:|---:|---:|---|"]
    stock = report["results"][0]
    for r in report["results"]:
        lines.append(f"| {r['loss']} | {r['median_step_ms']:.0f} | {r['peak_memory_bytes'] / 2**20:.1f} "
                     f"| {r['median_step_ms'] / stock['median_step_ms']:.2f} "
                     f"| {r['peak_memory_bytes'] / max(stock['peak_memory_bytes'], 1):.2f} "
                     f"| {', '.join(f'{v:.4f}' for v in r['losses'])} |")
    lines += ["", f"Largest gap between the generated cross_entropy's curve and mlx.nn.losses': {curve_gap(report):.2e}", ""]
    return "\n".join(lines)
