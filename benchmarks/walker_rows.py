"""Walker and export rows: build_graph against a bare walk and torchviz, deep chains,
checkpointed models.

Times here are taken interleaved (gradviz, baseline, gradviz, baseline, ...) so that a
burst of load from elsewhere hits both sides; the ratio is the median of the per-round
ratios, and ``r lo-hi`` beside the baseline is their spread, a measure of the noise.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import torch

from common import Row, chain, interleaved, spread


def bare_walk(root) -> object:
    """The least a walker can do: follow next_functions and add bare edges to a DiGraph."""
    import networkx as nx

    graph = nx.DiGraph()
    seen = {root}
    stack = [root]
    while stack:
        fn = stack.pop()
        for child, _ in fn.next_functions:
            if child is None:
                continue
            graph.add_edge(fn, child)
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return graph


def bench_resnet18_vs_torchviz() -> Iterator[Row]:
    import torchvision
    from torchviz import make_dot

    import gradviz

    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    loss = (model(torch.rand(1, 3, 64, 64)) - torch.rand(1, 1000)).sum()
    params = dict(model.named_parameters())
    ours, theirs, ratio, low, high = interleaved(
        lambda: gradviz.build_graph(loss, model=model),
        lambda: make_dot(loss, params=params), 40)
    yield Row("resnet18: build_graph vs torchviz make_dot", f"{ours * 1e3:.2f} ms",
              f"{theirs * 1e3:.2f} ms {spread(low, high)}", ratio, "report")
    # Like with like: both draw the saved tensors, and both end with the DOT text.
    ours, theirs, ratio, low, high = interleaved(
        lambda: gradviz.to_dot(gradviz.build_graph(loss, model=model), saved=True),
        lambda: make_dot(loss, params=params, show_saved=True).source, 40)
    yield Row("resnet18: build_graph+to_dot(saved) vs make_dot(saved)", f"{ours * 1e3:.2f} ms",
              f"{theirs * 1e3:.2f} ms {spread(low, high)}", ratio, "<=1.0")


def bench_chain_100k() -> Iterator[Row]:
    import gradviz

    nodes = 100_001  # the sines and the leaf
    root = chain(nodes - 1)
    # CPU time: steadier than wall time on a shared machine, the same on a quiet one.
    ours, theirs, ratio, low, high = interleaved(
        lambda: gradviz.build_graph(root), lambda: bare_walk(root.grad_fn), 7,
        clock=time.process_time)
    yield Row("100k-node chain: build_graph vs bare edge walk", f"{ours:.3f} s",
              f"{theirs:.3f} s {spread(low, high)}", ratio, "<=1.3")
    yield Row("100k-node chain: build_graph's extra per node",
              f"{(ours - theirs) / nodes * 1e6:+.2f} us",
              f"bare {theirs / nodes * 1e6:.2f} us/node", None, "report")


_MILLION = textwrap.dedent(
    """
    import time, torch, gradviz

    def kib(field):
        for line in open("/proc/self/status"):
            if line.startswith(field):
                return int(line.split()[1])

    y = torch.ones(4, requires_grad=True)
    for _ in range(1_000_000):
        y = y.sin()
    with open("/proc/self/clear_refs", "w") as f:   # reset the peak to the current RSS
        f.write("5")
    before = kib("VmHWM")
    start = time.perf_counter()
    graph = gradviz.build_graph(y)
    took = time.perf_counter() - start
    print(graph.number_of_nodes(), took, kib("VmHWM") - before, kib("VmRSS") - before, before)
    """
)


def bench_chain_1m() -> Iterator[Row]:
    result = subprocess.run([sys.executable, "-c", _MILLION], capture_output=True, text=True)
    if result.returncode != 0:
        yield Row("1M-node chain: build_graph", f"FAILED rc={result.returncode}", "", None,
                  result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "")
        return
    nodes, took, peak, kept, base = (float(v) for v in result.stdout.split())
    yield Row("1M-node chain: build_graph time", f"{took:.2f} s", f"{nodes:.0f} nodes", None,
              "report")
    yield Row("1M-node chain: peak memory, bytes per node", f"{peak * 1024 / nodes:.0f} B",
              f"chain alone {base / 1024:.0f} MiB", None, "report")
    yield Row("1M-node chain: graph kept, bytes per node", f"{kept * 1024 / nodes:.0f} B",
              "", None, "report")


def _checkpointed_llama(layers: int, checkpointing: bool):
    import transformers

    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        num_hidden_layers=layers, hidden_size=64, intermediate_size=128, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=256, max_position_embeddings=64)
    model = transformers.LlamaForCausalLM(config)
    model.train()
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    tokens = torch.randint(0, 256, (2, 32))
    return model, model(input_ids=tokens, labels=tokens).loss


def bench_checkpointed_llama() -> Iterator[Row]:
    """A walk must not re-run checkpointed forwards: the same model with and without."""
    import gradviz

    model, loss = _checkpointed_llama(16, True)
    plain_model, plain_loss = _checkpointed_llama(16, False)
    ours, theirs, ratio, low, high = interleaved(
        lambda: gradviz.build_graph(loss, model=model),
        lambda: gradviz.build_graph(plain_loss, model=plain_model), 10)
    yield Row("Llama 16 layers: build_graph, checkpointed vs not", f"{ours * 1e3:.1f} ms",
              f"{theirs * 1e3:.1f} ms {spread(low, high)}", ratio, "<=1.5")


def bench_checkpoint_reruns() -> Iterator[Row]:
    """How often build_graph runs the forward of 4 checkpointed blocks (it should not)."""
    from torch.utils.checkpoint import checkpoint

    import gradviz

    torch.manual_seed(0)
    blocks = torch.nn.ModuleList(torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.GELU())
                                 for _ in range(4))
    calls = [0]

    def run(block, x):
        calls[0] += 1
        return block(x)

    x = torch.rand(512, 256, requires_grad=True)
    for block in blocks:
        x = checkpoint(run, block, x, use_reentrant=False)
    loss = x.sum()
    before = calls[0]
    gradviz.build_graph(loss, model=blocks)
    reruns = calls[0] - before
    yield Row("4 checkpointed blocks: forwards re-run by a walk", f"{reruns}", "0 expected", None,
              "0 " + ("ok" if reruns == 0 else "MISSED"))


ROWS = [bench_resnet18_vs_torchviz, bench_chain_100k, bench_chain_1m, bench_checkpointed_llama,
        bench_checkpoint_reruns]
