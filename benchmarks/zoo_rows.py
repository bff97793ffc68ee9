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

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from common import Row, prepared_rounds, resnet18_batch8, spread

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
    tokens = torch.randint(0, min(1000, model.config.vocab_size), (2, 32))
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


def _vit_tiny():
    """A ViT from ``transformers`` (the zoo's vit_small is torchvision's)."""
    import transformers

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    config = transformers.ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=128, image_size=32, patch_size=8)
    model = transformers.ViTForImageClassification(config)
    images = torch.rand(2, 3, 32, 32)
    return model, lambda: model(pixel_values=images).logits.square().mean()


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


def _tiny_vocabulary(name: str, **config):
    """A zoo language model with 256 tokens: with the default vocabulary (30k to 50k)
    the output layer's backward is most of the time (66 to 460 us per node on
    average), with 256 a node takes 6 to 15 us, and what the hooks cost shows."""
    model_class, config_class = {"gpt2_tiny": ("GPT2LMHeadModel", "GPT2Config"),
                                 "bert_tiny": ("BertForMaskedLM", "BertConfig"),
                                 "llama_tiny": ("LlamaForCausalLM", "LlamaConfig"),
                                 "t5_tiny": ("T5ForConditionalGeneration", "T5Config")}[name]
    return lambda: _language(model_class, config_class, vocab_size=256, **config)


#: The hot path's models: tiny transformers (a few us of backward per node, so the
#: hooks' cost per node shows), a convnet with little work per node (resnet18 batch 8
#: at 64x64), and one with a lot (resnet50 at 224).
HOT_PATH = {
    "gpt2_tiny": (_tiny_vocabulary("gpt2_tiny", n_layer=2, n_embd=64, n_head=2), "<=1.6"),
    "bert_tiny": (_tiny_vocabulary("bert_tiny", num_hidden_layers=2, hidden_size=64,
                                   num_attention_heads=2, intermediate_size=128), "<=1.6"),
    "llama_tiny": (_tiny_vocabulary("llama_tiny", num_hidden_layers=2, hidden_size=64,
                                    num_attention_heads=2, num_key_value_heads=2,
                                    intermediate_size=128), "<=1.6"),
    "t5_tiny": (_tiny_vocabulary("t5_tiny", num_layers=2, num_decoder_layers=2, d_model=64,
                                 d_ff=128, num_heads=2, d_kv=32, decoder_start_token_id=0,
                                 pad_token_id=0), "<=1.6"),
    "vit_tiny": (_vit_tiny, "<=1.6"),
    "resnet18_b8": (resnet18_batch8, "<=1.2"),
    "resnet50": (ZOO["resnet50"], "report"),
}
HOT_PATH_ROUNDS = {"resnet50": 5, "resnet18_b8": 9}  # others: 21


def _noop_pre_hook(grad_outputs):
    return None


def _noop_post_hook(grad_inputs, grad_outputs):
    return None


def bench_hot_path() -> Iterator[Row]:
    """What the stepper's hooks add per node, against plain backward and two floors:
    a no-op Python pre-hook and post-hook on every node, registered and removed around
    a plain backward (what any stepper built on Node hooks pays at least), and the same
    hooks keeping a reference to every gradient (what a history of them costs besides).

    One thread, the cases taken in turns on fresh forward passes; a stepper's run()
    counts its hook registration (the graph walk, in the stepper's constructor, does
    not: it is build_graph's, measured by the walker's rows). Times are the process's
    CPU time (see :func:`common.prepared_rounds`), ratios the median of each round's;
    per-node figures compare the fastest rounds (on a shared machine the median of
    each round's difference moved by 3 us per node from one run to the next, the
    fastest by 1), over the graph's nodes; the last row of each model compares the
    fastest wall times. :func:`bench_callgrind` counts instructions instead.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name, (make, target) in HOT_PATH.items():
            yield from _hot_path_rows(name, make, target)
    finally:
        torch.set_num_threads(threads)


def _hot_path_rows(name: str, make, target: str) -> Iterator[Row]:
    from gradviz import BackwardStepper
    from gradviz.graph.walk import discover

    model, forward = make()

    def plain():
        model.zero_grad(set_to_none=True)
        return forward().backward

    def floor(keep: bool):
        def prepare():
            model.zero_grad(set_to_none=True)
            loss = forward()
            fns = discover([loss.grad_fn]).nodes
            kept = []

            def post_hook(grad_inputs, grad_outputs):
                kept.append(grad_inputs)

            pre, post = (kept.append, post_hook) if keep else (_noop_pre_hook, _noop_post_hook)

            def hooked():
                handles = [fn.register_prehook(pre) for fn in fns]
                handles += [fn.register_hook(post) for fn in fns]
                loss.backward()
                for handle in handles:
                    handle.remove()
            return hooked
        return prepare

    def stepped():
        model.zero_grad(set_to_none=True)
        return BackwardStepper(forward(), model=model).run

    nodes = len(discover([forward().grad_fn]).nodes)
    times = prepared_rounds({"plain": plain, "floor": floor(False), "keep": floor(True),
                             "stepped": stepped}, HOT_PATH_ROUNDS.get(name, 21))
    (plain_wall, base), (stepped_wall, ours) = times["plain"], times["stepped"]
    floor_cpu, keep_cpu = times["floor"][1], times["keep"][1]

    def ratios(mine):
        return sorted(m / b for m, b in zip(mine, base))

    def per_node(mine):  # the fastest rounds: the least disturbed by the machine's load
        return (min(mine) - min(base)) / nodes * 1e6

    run_ratios, floor_ratios = ratios(ours), ratios(floor_cpu)
    theirs = statistics.median(base)
    yield Row(f"hot {name}, {nodes} nodes: run() vs backward()",
              f"{statistics.median(ours) * 1e3:.2f} ms",
              f"{theirs * 1e3:.2f} ms {spread(run_ratios[0], run_ratios[-1])}",
              statistics.median(run_ratios), target)
    extra = per_node(ours)
    met = "ok" if extra <= 4 else "MISSED"
    yield Row(f"hot {name}: us/node, run() | floor | floor+keep", f"{extra:+.1f} us",
              f"{per_node(floor_cpu):+.1f} | {per_node(keep_cpu):+.1f} us", None,
              f"<=4 us {met}" if target == "<=1.6" else "report")
    yield Row(f"hot {name}: floor (no-op hooks) vs backward()",
              f"{statistics.median(floor_cpu) * 1e3:.2f} ms",
              f"{theirs / nodes * 1e6:.1f} us/node {spread(floor_ratios[0], floor_ratios[-1])}",
              statistics.median(floor_ratios), "report")
    yield Row(f"hot {name}: wall, fastest run() vs fastest backward()",
              f"{min(stepped_wall) * 1e3:.2f} ms", f"{min(plain_wall) * 1e3:.2f} ms",
              min(stepped_wall) / min(plain_wall), "report")


_COUNTED = """
import gc, operator, sys
import torch
sys.path.insert(0, {here!r})
torch.set_num_threads(1)
from common import chain
from walker_rows import bare_walk
from zoo_rows import HOT_PATH, _noop_post_hook, _noop_pre_hook
import gradviz
from gradviz.engine.backward_hooks import BackwardRun
from gradviz.graph.walk import discover

# callgrind counts on the thread that enters operator.call: the backward thread too
backward = BackwardRun.backward
BackwardRun.backward = lambda run: operator.call(backward, run)
model, forward = HOT_PATH[{model!r}][0]()

def hooked(loss, keep):
    fns, kept = discover([loss.grad_fn]).nodes, []
    pre, post = ((kept.append, lambda grad_inputs, grad_outputs: kept.append(grad_inputs))
                 if keep else (_noop_pre_hook, _noop_post_hook))
    def run():
        handles = [fn.register_prehook(pre) for fn in fns]
        handles += [fn.register_hook(post) for fn in fns]
        loss.backward()
        for handle in handles:
            handle.remove()
    return run

for case in ("plain", "floor", "keep", "stepped", "stepped"):  # the first stepper warms up
    model.zero_grad(set_to_none=True)
    loss = forward()
    timed = {{"plain": lambda: loss.backward, "floor": lambda: hooked(loss, False),
             "keep": lambda: hooked(loss, True),
             "stepped": lambda: gradviz.BackwardStepper(loss, model=model).run}}[case]()
    gc.collect()
    operator.call(timed)
root = chain(20_000)
for walk in (gradviz.build_graph, gradviz.build_graph, lambda root: bare_walk(root.grad_fn)):
    gc.collect()
    operator.call(walk, root)
print(len(discover([forward().grad_fn]).nodes))
"""


def bench_callgrind() -> Iterator[Row]:
    """The hot path in instructions (valgrind's callgrind), which a loaded machine does
    not change: a timing run on a shared 2-core box swung 2x, these counts stay within
    0.2%. Each measured call goes through ``operator.call``, on which callgrind turns
    counting on and dumps after; a stepper's backward thread enters it too. Per node
    of gpt2_tiny above plain backward: the floor (no-op hooks), the floor keeping
    every gradient, run(); and per node of a 20k chain: build_graph against the bare
    edge walk (the second walk: the first imports). Takes about five minutes."""
    import glob
    import shutil
    import tempfile

    if shutil.which("valgrind") is None:
        yield Row("callgrind: instructions per node", "skipped", "no valgrind", None, "report")
        return
    here = str(Path(__file__).parent)
    with tempfile.TemporaryDirectory() as folder:
        script = _COUNTED.format(here=here, model="gpt2_tiny")
        result = subprocess.run(
            ["valgrind", "--tool=callgrind", "--collect-atstart=no",
             "--toggle-collect=_operator_call", "--dump-after=_operator_call",
             f"--callgrind-out-file={folder}/cg.%p", sys.executable, "-c", script],
            capture_output=True, text=True, check=False,
            env={**os.environ, "OMP_WAIT_POLICY": "passive"})
        if result.returncode != 0:
            yield Row("callgrind: instructions per node", "FAILED", f"rc={result.returncode}",
                      None, result.stderr.strip().splitlines()[-1][:60])
            return
        nodes = int(result.stdout.split()[-1])
        dumps = sorted(glob.glob(f"{folder}/cg.*.*"), key=lambda f: int(f.rsplit(".", 1)[1]))
        counts = [_instructions(dump) for dump in dumps]
    # plain, floor, keep, two steppers of two dumps each (its thread's, then the caller's),
    # two build_graph walks, one bare walk
    plain, floor, keep = counts[:3]
    stepped = counts[5] + counts[6]
    walks = counts[7:]

    def per_node(count):
        return f"{(count - plain) / nodes:+,.0f}"
    yield Row(f"callgrind gpt2_tiny, {nodes} nodes: instr/node, run()", per_node(stepped),
              f"floor {per_node(floor)} | keep {per_node(keep)}", stepped / plain, "report")
    yield Row("callgrind 20k chain: instr/node, build_graph", f"{walks[1] / 20_001:,.0f}",
              f"bare {walks[2] / 20_001:,.0f}", walks[1] / walks[2], "report")


def _instructions(dump: str) -> int:
    with open(dump) as lines:
        for line in lines:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise ValueError(f"no instruction count in {dump}")


ROWS = [bench_zoo, bench_hot_path, bench_callgrind]
