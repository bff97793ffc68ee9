"""summarize(): the statistics a person reads, exact to display precision for every layout."""

import math

import pytest
import torch

from gradviz import summarize


def reference(tensor):
    values = tensor.detach().abs() if tensor.is_complex() else tensor.detach()
    values = values.double().reshape(-1)
    return {
        "norm": float(values.norm()),
        "mean": float(values.mean()),
        "std": float(values.std(correction=0)),
        "min": float(values.min()),
        "max": float(values.max()),
        "sample": tuple(values[:6].tolist()),
    }


def _layouts():
    torch.manual_seed(0)
    yield "contiguous", torch.randn(2, 3, 5, 7)
    yield "transposed", torch.randn(40, 30).t()
    yield "permuted", torch.randn(2, 9, 9, 16).permute(0, 3, 1, 2)
    yield "channels-last", torch.randn(2, 3, 8, 8).to(memory_format=torch.channels_last)
    yield "expanded", torch.randn(3, 1).expand(3, 50)
    yield "sliced", torch.randn(20, 20)[:, 3:9]
    yield "size-one dims", torch.randn(6, 1, 1, 2).permute(2, 1, 3, 0)
    yield "mean far above the spread", torch.randn(1000) * 1e-3 + 100.0
    yield "a constant", torch.full((500,), 0.25)
    yield "half", torch.randn(16, 16).half()
    yield "integers", torch.arange(-5, 12)
    yield "complex", torch.randn(20, dtype=torch.complex64)
    yield "a scalar", torch.tensor(-2.5)


@pytest.mark.parametrize(("name", "tensor"), list(_layouts()), ids=[n for n, _ in _layouts()])
def test_statistics_match_float64_for_every_layout(name, tensor):
    summary, expected = summarize(tensor), reference(tensor)
    assert summary.shape == tuple(tensor.shape) and summary.numel == tensor.numel()
    assert summary.norm == pytest.approx(expected["norm"], rel=2e-6)
    assert summary.mean == pytest.approx(expected["mean"], rel=2e-6, abs=1e-9)
    assert summary.std == pytest.approx(expected["std"], rel=1e-5, abs=1e-7 * abs(expected["mean"]))
    assert (summary.min, summary.max) == (expected["min"], expected["max"])
    assert summary.sample == pytest.approx(expected["sample"], rel=1e-6)  # the tensor's order
    assert summary.finite and (summary.nan, summary.inf) == (0, 0)


def test_a_constant_has_no_spread():
    assert summarize(torch.ones(10_000)).std == 0.0


# Up to SMALL elements a CPU tensor is summarized in Python, beyond it with torch ops.
SIZES = pytest.mark.parametrize("repeat", [1, 100], ids=["small", "large"])


@SIZES
def test_nan_and_inf_are_counted(repeat):
    summary = summarize(torch.tensor([1.0, math.nan, math.inf, -math.inf, 2.0] * repeat))
    assert (summary.nan, summary.inf) == (repeat, 2 * repeat) and not summary.finite
    assert math.isnan(summary.std) and math.isnan(summary.min) and math.isnan(summary.max)


@SIZES
def test_only_inf_keeps_the_extremes(repeat):
    summary = summarize(torch.tensor([1.0, math.inf, -2.0] * repeat))
    assert (summary.min, summary.max, summary.nan, summary.inf) == (-2.0, math.inf, 0, repeat)


@SIZES
def test_finite_values_whose_squares_overflow_float32(repeat):
    summary = summarize(torch.tensor([3e38, -3e38, 3e38] * repeat))
    assert summary.finite and summary.norm == pytest.approx(3e38 * math.sqrt(3 * repeat))
    assert summary.mean == pytest.approx(1e38)


def test_an_empty_tensor():
    summary = summarize(torch.ones(0, 3))
    assert summary.numel == 0 and summary.sample == () and math.isnan(summary.mean)


@pytest.mark.parametrize(("name", "tensor"), list(_layouts()), ids=[n for n, _ in _layouts()])
def test_the_queued_summary_of_cuda_tensors_gives_the_same_numbers(name, tensor):
    """What the stepper uses for a CUDA gradient leaving its history inside the engine's
    post-hook (queued on the device, read later), checked here on CPU."""
    from gradviz.engine.summary import PendingSummary, _values

    queued, summary = PendingSummary.of(tensor, _values(tensor)).result(), summarize(tensor)
    assert (queued.shape, queued.dtype, queued.device, queued.numel) == (
        summary.shape, summary.dtype, summary.device, summary.numel)
    for field in ("norm", "mean", "std", "min", "max"):
        assert getattr(queued, field) == pytest.approx(getattr(summary, field), rel=1e-5,
                                                       abs=1e-6), field
    assert queued.sample == summary.sample and (queued.nan, queued.inf) == (0, 0)


def test_the_queued_summary_counts_nan_and_inf():
    from gradviz.engine.summary import PendingSummary, _values

    tensor = torch.tensor([1.0, math.nan, math.inf, -math.inf, 2.0])
    queued = PendingSummary.of(tensor, _values(tensor)).result()
    assert (queued.nan, queued.inf) == (1, 2) and not queued.finite


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_summaries_queued_on_cuda_match_those_read_on_cpu():
    from gradviz.engine.summary import PendingSummary, summarize_as, summarize_later

    tensor = torch.randn(256, 1024, device="cuda").t()
    pending = summarize_later(tensor)
    assert isinstance(pending, PendingSummary)
    viewed = summarize_as(pending, tensor.reshape(-1, 8))
    assert isinstance(viewed, PendingSummary)
    cpu = summarize(tensor.cpu())
    result = pending.result()
    assert result.device.startswith("cuda")
    assert result.norm == pytest.approx(cpu.norm, rel=1e-5) and result.sample == cpu.sample
    assert viewed.result().sample == summarize(tensor.cpu().reshape(-1, 8)).sample
    assert viewed.result().norm == result.norm
    again = summarize_as(result, tensor.reshape(-1, 4))  # from a summary already read
    assert again.result().sample == summarize(tensor.cpu().reshape(-1, 4)).sample


def test_same_elements_is_told_for_views_and_only_for_them():
    from gradviz.engine.summary import same_elements

    base = torch.randn(4, 6, 5)
    for view in (base.view(24, 5), base.permute(2, 0, 1), base.transpose(0, 1), base):
        assert same_elements(view, base)
    for other in (base[1:], base[:, :, :3], base.clone(), base.double(),
                  torch.randn(5, 1).expand(5, 24), torch.empty(0)):
        assert not same_elements(other, base)


@pytest.mark.parametrize("view", [lambda t: t.view(6, 20), lambda t: t.permute(2, 1, 0),
                                  lambda t: t.transpose(0, 2).unsqueeze(1)])
def test_a_view_takes_the_statistics_and_reads_its_own_first_elements(view):
    from gradviz.engine.summary import PendingSummary, _values, summarize_as

    base = torch.randn(4, 6, 5)
    viewed = view(base)
    assert summarize_as(summarize(base), viewed) == summarize(viewed)
    queued = PendingSummary.of(base, _values(base))
    assert summarize_as(queued, viewed).sample == summarize(viewed).sample
