"""Text fitted to a small terminal's cells: cut only with an ellipsis, names in the middle."""

from gradviz.tui.fit import ELLIPSIS, cut_end, cut_middle, fit_columns


def test_a_cut_end_says_so():
    assert cut_end("2.345", 5) == "2.345"
    assert cut_end("2.345", 2) == "2…"  # never "2", which reads as a value
    assert cut_end("anything", 0) == ""


def test_a_long_name_keeps_its_top_module_and_its_parameter():
    assert cut_middle("layer4.1.conv2.weight", 20) == "layer4.…conv2.weight"
    assert cut_middle("layer1.0.downsample.0.weight", 16) == "layer1.…0.weight"
    assert cut_middle("fc.bias", 20) == "fc.bias"
    for width in range(3, 30):
        cut = cut_middle("encoder.layers.11.self_attn.in_proj_weight", width)
        assert len(cut) == width and ELLIPSIS in cut


COLUMNS = [("|grad|", 6), ("grad", 9), ("|Δ|/|p|", 7), ("|Δ|", 3), ("shape", 13)]


def edges(name, widths, padding=2):
    """Where each column ends, left to right."""
    out, at = [], name + padding
    for key, _ in COLUMNS:
        at += widths[key] + padding
        out.append(at)
    return out


def test_values_win_over_names_and_no_column_shows_in_part():
    for available in range(20, 90):
        for longest in (1, 9, 28):
            name, widths = fit_columns(available, longest, COLUMNS)
            assert name <= max(longest, available)
            # a column is shown whole, or starts at (or beyond) the edge
            assert all(end <= available or end - widths[key] - 2 >= available
                       for end, (key, _) in zip(edges(name, widths), COLUMNS)), (available, longest)
    name, widths = fit_columns(34, 28, COLUMNS)  # 80x24: resnet18's table
    assert name < 28 and edges(name, widths)[0] <= 34  # |grad| is whole; the name gives way
    name, widths = fit_columns(34, 9, COLUMNS)  # autograd-basics: a and b, their values
    assert edges(name, widths)[1] <= 34
