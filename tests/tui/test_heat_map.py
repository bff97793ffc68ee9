"""The heat map's and the history plots' arithmetic: bins, colour scales, thinning."""

import math

from gradviz.tui.widgets.heat_map import (MISSING, NONFINITE, ZERO, BandScale, LogScale, bin_cell,
                                  column_bins)
from gradviz.tui.widgets.run_plots import _unbroken, envelope


def test_few_iterations_fill_the_width_and_many_share_columns_evenly():
    assert column_bins(4, 10) == [(0, 1, 2), (1, 2, 3), (2, 3, 2), (3, 4, 3)]
    bins = column_bins(1000, 30)
    assert len(bins) == 30 and all(cells == 1 for _, _, cells in bins)
    assert bins[0][0] == 0 and bins[-1][1] == 1000
    assert all(a[1] == b[0] for a, b in zip(bins, bins[1:]))
    assert {end - first for first, end, _ in bins} == {33, 34}
    assert column_bins(0, 10) == [] and column_bins(5, 0) == []


def test_a_column_shows_nan_first_then_its_largest_value_or_why_it_has_none():
    scale = LogScale(-3, 1)
    values = [0.1, math.nan, 2.0, 0.0]
    assert bin_cell(values, [False, True, False, False], 0, 4, scale)[0] == NONFINITE
    assert bin_cell(values, None, 0, 4, scale) == ("value", 2.0)
    assert bin_cell(values, None, 1, 2, scale)[0] == MISSING  # NaN without a flag: no gradient
    assert bin_cell(values, None, 3, 4, scale) == (ZERO, 0.0)
    assert bin_cell([math.inf, 1.0], None, 0, 2, scale) == ("value", math.inf)


def test_log_scale_spans_whole_decades_and_colours_low_to_high():
    scale = LogScale.spanning([[0.002, math.nan], [30.0, 0.0, math.inf]])
    assert (scale.low, scale.high) == (-3, 2)
    assert scale.colour(10 ** -3) == "#440154" and scale.colour(100.0) == "#fde725"
    assert scale.colour(1e-9) == "#440154"  # below the scale: its lowest colour, not a wrap
    assert "1e-3" in scale.legend(40).plain and "1e2" in scale.legend(40).plain
    assert "log" in scale.legend(40).plain
    assert (LogScale.spanning([[math.nan]]).low, LogScale.spanning([[5.0]]).high) == (-1, 1)


def test_band_scale_is_green_inside_blue_below_red_above_and_picks_the_farthest_out():
    scale = BandScale.around((1e-4, 1e-2), [[1e-7, 1e-3, 3.0]])
    assert (scale.floor, scale.ceiling) == (-7, 1)
    inside = scale.colour(1e-3)
    assert inside == scale.colour(1e-4) == scale.colour(1e-2) == "#31a354"
    below, far_below = scale.colour(5e-5), scale.colour(1e-7)
    above, far_above = scale.colour(2e-2), scale.colour(10.0)
    assert below != far_below and far_below == "#08306b"
    assert above != far_above and far_above == "#7f2704"
    assert scale.pick([1e-3, 1e-6, 5e-2]) == 1e-6  # 2 decades below beats 0.7 above
    assert scale.pick([1e-3, 5e-5, 5e-1]) == 5e-1  # 1.7 above beats 0.3 below
    assert scale.describe(1e-3) == "0.001 in band" and scale.describe(0.5) == "0.5 above band"
    legend = scale.legend(60).plain
    assert "0.0001" in legend and "band" in legend and "0.01" in legend


def test_envelope_keeps_every_extreme_in_order_and_few_points_unchanged():
    xs = list(range(1, 1001))
    ys = [math.sin(x / 30) for x in xs]
    ys[500] = 50.0  # a spike
    ex, ey = envelope(xs, ys, 40)
    assert len(ex) <= 80 and ex == sorted(ex)
    assert 50.0 in ey and max(ey) == 50.0 and min(ey) == min(ys)
    assert envelope([1, 2, 3], [3.0, 1.0, 2.0], 40) == ([1, 2, 3], [3.0, 1.0, 2.0])


def test_the_line_is_cut_where_a_value_was_nan():
    parts = _unbroken([1, 2, 4, 5, 7], [1.0, 2.0, 4.0, 5.0, 7.0], {3, 6})
    assert parts == [([1, 2], [1.0, 2.0]), ([4, 5], [4.0, 5.0]), ([7], [7.0])]
    assert _unbroken([1, 2], [1.0, 2.0], set()) == [([1, 2], [1.0, 2.0])]
