"""Shared fixtures: the tutorial's graphs, built once per test session where they are read-only."""

import sys
from pathlib import Path

import pytest
import torch

# tests.loops (the loop zoo) and helpers shared between test folders import as `tests.*`
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@pytest.fixture
def tutorial_leaves():
    a = torch.tensor([2.0, 3.0], requires_grad=True)
    b = torch.tensor([6.0, 4.0], requires_grad=True)
    return a, b


@pytest.fixture(scope="session")
def resnet18_trace():
    import gradviz

    scenario = gradviz.load_scenario("resnet18")
    return scenario, scenario.trace()


SCENARIO = """
import torch, gradviz
w = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
calls = []
def forward():
    calls.append(1)
{body}
def build():
    return gradviz.Scenario(name="s", params={{"w": w}}, forward=forward, {extra}
                            optimizer=torch.optim.SGD([w], lr=0.1))
"""


@pytest.fixture
def scenario_file(tmp_path):
    """``write(body)``: a scenario file whose forward is ``body`` (over a leaf ``w`` of three
    elements; ``calls`` counts the forwards), its path as a string."""

    def write(body: str, *, name: str = "s.py", extra: str = "") -> str:
        path = tmp_path / name
        path.write_text(SCENARIO.format(body=body, extra=extra))
        return str(path)

    return write
