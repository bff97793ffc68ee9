"""Fitting text into the cells a small terminal has (80x24): nothing is cut silently.

A number cut at a panel's edge reads as another number (``2`` of ``2.345``), so
whatever does not fit ends in an ellipsis; a long name gives up its middle
(``layer4.…conv2.weight``: the top module and the parameter stay), so that the
values beside it fit. Plain functions of strings, tested without a terminal.
"""

from __future__ import annotations

ELLIPSIS = "…"


def cut_end(text: str, width: int) -> str:
    """``text`` in at most ``width`` cells, its end replaced by an ellipsis if it is cut."""
    if len(text) <= width:
        return text
    if width <= 0:
        return ""
    return text[:width - 1] + ELLIPSIS


def cut_middle(name: str, width: int) -> str:
    """A dotted name in at most ``width`` cells: its start (up to the first dot, where
    that leaves room) and as much of its end as fits, an ellipsis between."""
    if len(name) <= width:
        return name
    if width <= 2:
        return cut_end(name, width)
    room = width - 1
    head_end = name.find(".") + 1
    if not 0 < head_end <= room // 2:
        head_end = room // 2
    head = name[:head_end]
    return head + ELLIPSIS + name[len(name) - (room - len(head)):]


def fit_columns(available: int, name_width: int, columns: list[tuple[str, int]], *,
                padding: int = 2, min_name: int = 12, first_min_name: int = 8
                ) -> tuple[int, dict[str, int]]:
    """Widths for a table whose first column holds names and the rest values.

    Values win over names: the first value column fits whole beside a name of at
    least ``first_min_name`` cells, the others while the name keeps ``min_name`` (or
    the longest name, if shorter); the names get what is left, and any slack goes to
    the last value column that fits, so the next one starts exactly at the panel's
    edge (scroll right to see it) instead of showing its first characters. Returns the
    name column's width and every value column's (those that did not fit keep theirs).
    """
    shown: list[str] = []
    values = 0  # the shown value columns' cells, their padding included
    for index, (key, width) in enumerate(columns):
        least = min(name_width, first_min_name if index == 0 else min_name)
        if least + padding + values + width + padding > available:
            break
        values += width + padding
        shown.append(key)
    widths = dict(columns)
    name = max(min(name_width, available - padding - values), 1)
    slack = available - (name + padding + values)
    if slack > 0 and len(shown) < len(columns):  # the next column would show in part
        if shown:
            widths[shown[-1]] += slack
        else:
            name += slack
    return name, widths
