"""The spike rule on plain numbers: what breaks, at which iteration, and what does not."""

from gradviz.training.spikes import SpikeWatch


def first_spike(values, factor=10.0):
    """The 1-based iteration of the first spike in a run of gradient norms, with its text."""
    watch = SpikeWatch(factor)
    for i, value in enumerate(values, start=1):
        spike = watch.see(None, value)
        if spike is not None:
            return i, spike.detail
    return None


def test_a_jump_breaks_at_its_iteration_and_says_against_what():
    assert first_spike([120.0, 2120.0, 3.6e6]) == (
        2, "gradient norm 2120 is 17.7x the iteration before (120)")


def test_a_gentle_climb_breaks_once_it_has_grown_tenfold():
    at, detail = first_spike([1.0, 2.5, 6.0, 15.0, 40.0])
    assert at == 4 and "3 iterations before" in detail


def test_a_fitted_models_rounding_noise_is_not_a_spike():
    # a run that starts at 1, fits its data to float rounding, then jumps tenfold there
    values = [1.0, 0.5, 0.1] + [1.7e-7] * 30 + [1.8e-6, 1.7e-7]
    assert first_spike(values) is None


def test_a_late_divergence_still_breaks_once_it_nears_where_the_run_was():
    values = [1.0, 0.5] + [0.01] * 20 + [0.05, 0.5, 40.0]
    at, _ = first_spike(values)
    assert at == 24  # 0.5 is 50x the median and half the run's peak


def test_one_break_per_episode():
    watch = SpikeWatch(10.0)
    told = [watch.see(None, v) is not None for v in [1.0] * 5 + [50.0, 80.0, float("inf"), 1.0, 60.0]]
    assert told == [False] * 5 + [True, False, False, False, True]
