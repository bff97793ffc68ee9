"""What a notebook cell shows for gradviz's facts: small HTML tables, no scripts.

A ``StepEvent``, a ``ForwardEvent`` or a watch break left as a cell's last value
shows as one of these (their ``_repr_html_`` calls here; a ``WatchBreak`` is given
its formatter by :mod:`gradviz.notebook`). Plain Python over duck-typed objects, so
the same words serve every layer and the tests need no torch. Their ``repr`` stays
the one-line text a terminal shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

from gradviz.model.summary import TensorSummary

_TABLE = ('<table style="border-collapse:collapse;font-family:monospace;font-size:12px;'
          'text-align:left">')
_CELL = 'style="padding:1px 8px;text-align:left;vertical-align:top"'


def summary_cells(summary: TensorSummary | None) -> list[str]:
    """shape, dtype, |x|, mean, min, max (and NaN/Inf counts) of one tensor, as cells."""
    if summary is None:
        return ["none", "", "", "", ""]
    flags = "" if summary.finite else f" ({summary.nan} NaN, {summary.inf} Inf)"
    values = ""
    if summary.numel <= len(summary.sample):
        values = " [" + ", ".join(f"{v:.4g}" for v in summary.sample) + "]"
    return [f"{tuple(summary.shape)} {summary.dtype}{values}", f"{summary.norm:.4g}{flags}",
            f"{summary.mean:.4g}", f"{summary.min:.4g}", f"{summary.max:.4g}"]


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]],
          note: str = "") -> str:
    """A titled table; every value is escaped here."""
    out = [f"<div><b>{escape(title)}</b>"]
    if note:
        out.append(f' <span style="color:#777">{escape(note)}</span>')
    out.append(_TABLE)
    if header:
        out.append("<tr>" + "".join(f"<th {_CELL}>{escape(h)}</th>" for h in header) + "</tr>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td {_CELL}>{escape(str(c))}</td>" for c in row) + "</tr>")
    out.append("</table></div>")
    return "".join(out)


_GRAD_HEADER = ("", "shape, dtype", "|x|", "mean", "min", "max")


def step_event_html(event: Any) -> str:
    """One node run by backward: the gradient that came in, what went out along each
    edge (``next_functions`` slot), and a leaf's ``.grad``."""
    where = f" in {event.module}" if event.module else ""
    ran = "running" if event.duration is None else f"ran in {event.duration * 1e3:.3f} ms"
    note = f"step {event.index + 1}{where}, {ran}"
    if event.repeat:
        note += f", run {event.repeat + 1} of this node"
    rows = [[f"in: gradient {i}", *summary_cells(s)] for i, s in enumerate(event.grad_outputs)]
    rows += [[f"out: slot {i}", *summary_cells(s)] for i, s in enumerate(event.grad_inputs)
             if s is not None]
    if event.param_grad is not None:
        rows.append([".grad (accumulated)", *summary_cells(event.param_grad)])
    if event.nonfinite:
        note += "; NaN/Inf starts here (finite in, not finite out)"
    return table(f"{event.node} ({event.op})", _GRAD_HEADER, rows, note)


def forward_event_html(event: Any) -> str:
    """One torch operation of a forward: the node it recorded, or why none."""
    rows = [["module", "(outside the model)" if event.module is None else event.module or
             "(the model itself)"],
            ["line", str(event.source) if event.source is not None else "?"],
            ["output shapes", ", ".join(str(tuple(s)) for s in event.shapes)]]
    if event.recorded:
        made = ", ".join(event.keys) if event.keys else (event.key or event.node_type)
        rows.append(["recorded", f"{made} (seq {event.seq})"])
    else:
        rows.append(["recorded", f"no node: {event.reason}"])
    output = event.output
    if output is not None:
        zeros = event.zeros
        shape, norm = summary_cells(output)[:2]
        rows.append(["output", f"{shape}, |x| {norm}" + (f", {zeros:.0%} zeros" if zeros else "")])
    return table(f"operation {event.index}: {event.op}", (), rows)


def break_html(brk: Any) -> str:
    """A ``gradviz.watch`` break (its :class:`~gradviz.model.runs.events.BreakInfo`)."""
    reason = getattr(brk.reason, "value", brk.reason)
    rows = [["iteration", str(brk.iteration)], ["reason", str(reason)],
            ["what was seen", brk.detail]]
    if brk.loss is not None:
        rows.append(["loss", f"{brk.loss:.6g}"])
    if brk.grad_norm is not None:
        rows.append(["total gradient norm", f"{brk.grad_norm:.6g}"])
    origin = brk.origin
    if origin is not None:
        if origin.node is None:
            rows.append(["origin", f"not found: {origin.detail}"])
        else:
            phase = getattr(origin.phase, "value", origin.phase)
            rows.append(["origin", f"{origin.node} ({origin.op}), made in {phase}"])
            if origin.module:
                rows.append(["module", origin.module])
            if origin.file:
                rows.append(["line", f"{origin.file}:{origin.line}"])
            if origin.detail:
                rows.append(["how it was found", origin.detail])
    return table("gradviz.watch break", (), rows)
