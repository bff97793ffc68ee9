"""The README's pandas query of a record, run as printed against a real watched run: its
per-layer gradient norms are the norms of the gradients the loop had."""

import os
import re
from pathlib import Path

import pytest
import torch

import gradviz

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_block(marker: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    found = [block for block in blocks if marker in block]
    assert len(found) == 1, f"one python block with {marker!r} in the README"
    return found[0]


def test_the_readme_pandas_query_gives_each_layers_gradient_norm(tmp_path, monkeypatch):
    pytest.importorskip("pandas")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with gradviz.watch(model, optimizer, record=tmp_path / "run.db"):
        for _ in range(3):
            optimizer.zero_grad()
            model(torch.rand(5, 4)).pow(2).mean().backward()
            optimizer.step()
    truth = {layer: torch.sqrt(sum(p.grad.pow(2).sum() for p in module.parameters())).item()
             for layer, module in (("0", model[0]), ("2", model[2]))}

    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(readme_block("pandas as pd"), namespace)  # noqa: S102 - the README's own code
    table = namespace["layers"].pivot(index="iteration", columns="layer", values="grad_norm")
    assert list(table.index) == [1, 2, 3]
    for layer, norm in truth.items():
        assert table.loc[3, layer] == pytest.approx(norm, rel=1e-6)
    namespace["db"].close()
    assert os.listdir(tmp_path) == ["run.db"]  # read-only: no -wal or -shm left beside it
