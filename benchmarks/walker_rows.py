"""Walker and export rows: build_graph against a bare walk and torchviz, deep chains."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator

import torch

from common import Row, best_of, chain



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
    ours = best_of(lambda: gradviz.build_graph(loss, model=model), 20)
    ours_dot = best_of(lambda: gradviz.to_dot(gradviz.build_graph(loss, model=model)), 20)
    theirs = best_of(lambda: make_dot(loss, params=params), 20)
    yield Row("resnet18: build_graph vs torchviz make_dot", f"{ours * 1e3:.2f} ms",
              f"{theirs * 1e3:.2f} ms", ours / theirs, "report")
    yield Row("resnet18: build_graph + to_dot vs make_dot", f"{ours_dot * 1e3:.2f} ms",
              f"{theirs * 1e3:.2f} ms", ours_dot / theirs, "report")


def bench_chain_100k() -> Iterator[Row]:
    import gradviz

    root = chain(100_000)
    ours = best_of(lambda: gradviz.build_graph(root))
    bare = best_of(lambda: bare_walk(root.grad_fn))
    yield Row("100k-node chain: build_graph vs bare edge walk", f"{ours:.3f} s", f"{bare:.3f} s",
              ours / bare, "<=1.5")


_MILLION = textwrap.dedent(
    """
    import time, torch, gradviz

    def hwm_mib():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024

    y = torch.ones(4, requires_grad=True)
    for _ in range(1_000_000):
        y = y.sin()
    with open("/proc/self/clear_refs", "w") as f:   # reset the peak to the current RSS
        f.write("5")
    before = hwm_mib()
    start = time.perf_counter()
    graph = gradviz.build_graph(y)
    took = time.perf_counter() - start
    print(graph.number_of_nodes(), took, hwm_mib() - before, before)
    """
)


def bench_chain_1m() -> Iterator[Row]:
    result = subprocess.run([sys.executable, "-c", _MILLION], capture_output=True, text=True)
    if result.returncode != 0:
        yield Row("1M-node chain: build_graph", f"FAILED rc={result.returncode}", "", None,
                  result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "")
        return
    nodes, took, peak, base = result.stdout.split()
    yield Row("1M-node chain: build_graph time", f"{float(took):.2f} s", f"{nodes} nodes", None,
              "report")
    yield Row("1M-node chain: build_graph peak memory", f"+{float(peak):.0f} MiB",
              f"chain alone {float(base):.0f} MiB", None, "report")


ROWS = [bench_resnet18_vs_torchviz, bench_chain_100k, bench_chain_1m]
