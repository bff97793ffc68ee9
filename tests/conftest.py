"""Shared fixtures: the tutorial's graphs, built once per test session where they are read-only."""

import pytest
import torch


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
