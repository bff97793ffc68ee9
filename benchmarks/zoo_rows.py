"""Zoo rows: BackwardStepper.run() and step() on real architectures nobody here wrote.

torchvision models are built with ``weights=None`` and HuggingFace ``transformers``
models from tiny configs (two layers, width 64, the library's default vocabulary),
random weights, synthetic data: nothing is downloaded. Each model's plain
``loss.backward()`` and the stepper's ``run()`` alternate on fresh forward passes;
the row's ratio is the median of the per-pair ratios, and ``spread`` gives the
lowest and highest pair so that a noisy machine shows as such. ``per node`` is the
stepper's extra time divided by the graph's nodes, the number that does not depend
on how heavy each node's arithmetic is.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator

import torch
from common import Row

PAIRS = 7  # plain / stepped pairs per model
STEPS = 200  # step() calls timed per model


def _vision(make: Callable[[], torch.nn.Module], size: int, batch: int = 1):
    torch.manual_seed(0)
    model = make()
    images = torch.rand(batch, 3, size, size)
    return model, lambda: model(images).square().mean()


def _small_vit():
    from torchvision.models.vision_transformer import VisionTransformer

    return VisionTransformer(image_size=64, patch_size=8, num_layers=4, num_heads=4,
                             hidden_dim=128, mlp_dim=256, num_classes=10)


def _language(model_class: str, config_class: str, **config):
    import transformers

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    model = getattr(transformers, model_class)(getattr(transformers, config_class)(**config))
    tokens = torch.randint(0, 1000, (2, 32))
    return model, lambda: model(input_ids=tokens, labels=tokens).loss  # T5 shifts the labels


ZOO: dict[str, Callable[[], tuple[torch.nn.Module, Callable[[], torch.Tensor]]]] = {
    "resnet50": lambda: _vision(_torchvision("resnet50"), 224),
    "convnext_tiny": lambda: _vision(_torchvision("convnext_tiny"), 224),
    "swin_t": lambda: _vision(_torchvision("swin_t"), 224),
    "vit_small": lambda: _vision(_small_vit, 64, batch=2),
    "gpt2_tiny": lambda: _language("GPT2LMHeadModel", "GPT2Config",
                                     n_layer=2, n_embd=64, n_head=2),
    "bert_tiny": lambda: _language("BertForMaskedLM", "BertConfig", num_hidden_layers=2,
                                     hidden_size=64, num_attention_heads=2,
                                     intermediate_size=128),
    "llama_tiny": lambda: _language("LlamaForCausalLM", "LlamaConfig", num_hidden_layers=2,
                                      hidden_size=64, num_attention_heads=2,
                                      num_key_value_heads=2, intermediate_size=128),
    "t5_tiny": lambda: _language("T5ForConditionalGeneration", "T5Config", num_layers=2,
                                   num_decoder_layers=2, d_model=64, d_ff=128, num_heads=2,
                                   d_kv=32, decoder_start_token_id=0, pad_token_id=0),
}


def _torchvision(name: str) -> Callable[[], torch.nn.Module]:
    import torchvision

    return lambda: getattr(torchvision.models, name)(weights=None)


def _pairs(model, forward) -> tuple[list[float], list[float], int]:
    """Plain backward and stepper.run(), alternating; and the graph's size."""
    from gradviz import BackwardStepper

    plain, stepped = [], []
    nodes = 0
    for _ in range(PAIRS):
        model.zero_grad(set_to_none=True)
        loss = forward()
        start = time.perf_counter()
        loss.backward()
        plain.append(time.perf_counter() - start)
        del loss
        model.zero_grad(set_to_none=True)
        stepper = BackwardStepper(forward(), model=model)
        nodes = len(stepper)
        start = time.perf_counter()
        stepper.run()
        stepped.append(time.perf_counter() - start)
        del stepper
    return plain, stepped, nodes


def _step_latency(model, forward) -> float:
    from gradviz import BackwardStepper

    model.zero_grad(set_to_none=True)
    latencies = []
    with BackwardStepper(forward(), model=model) as stepper:
        stepper.start()
        for _ in range(STEPS):
            start = time.perf_counter()
            if stepper.step() is None:
                break
            latencies.append(time.perf_counter() - start)
    return statistics.median(latencies)


def bench_zoo() -> Iterator[Row]:
    ratios = []
    for name, make in ZOO.items():
        model, forward = make()
        plain, stepped, nodes = _pairs(model, forward)
        pair_ratios = sorted(s / p for s, p in zip(stepped, plain))
        ratio = statistics.median(pair_ratios)
        ratios.append(ratio)
        ours, theirs = statistics.median(stepped), statistics.median(plain)
        per_node = (ours - theirs) / nodes * 1e6
        yield Row(f"zoo {name}, {nodes} nodes: run() vs backward()",
                  f"{ours * 1e3:.1f} ms", f"{theirs * 1e3:.1f} ms", ratio, "<=2.0")
        yield Row(f"zoo {name}: ratio spread, extra per node",
                  f"{pair_ratios[0]:.2f}-{pair_ratios[-1]:.2f}", f"{per_node:+.1f} us/node",
                  None, "report")
        latency = _step_latency(model, forward)
        yield Row(f"zoo {name}: step() latency, median", f"{latency * 1e3:.2f} ms",
                  f"{min(STEPS, nodes)} steps", None,
                  "< 1 ms " + ("ok" if latency < 1e-3 else "MISSED"))
    yield Row("zoo: median of the run() ratios", f"{statistics.median(ratios):.2f}",
              f"max {max(ratios):.2f}", statistics.median(ratios), "<=1.5")


ROWS = [bench_zoo]
