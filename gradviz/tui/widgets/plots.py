"""The plots under the graph, drawn by plotext (through textual-plotext).

``LossPlot``: the loss of each forward pass. ``GradFlow``: mean |grad| of every
parameter, in the model's order from input to output, on a log scale with one
tick per decade, so that vanishing and exploding gradients show as a slope and
every parameter has its point (a table of bars fit only the first few).
"""

from __future__ import annotations

import math

from textual_plotext import PlotextPlot

_NONFINITE_COLOR = "red"
_ZERO_COLOR = "gray"


class LossPlot(PlotextPlot):
    """The loss of each forward pass so far."""

    def show_losses(self, losses: list[float]) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        _style(plt)
        if not losses:
            self.border_title = "loss: no forward pass yet"
        else:
            passes = "pass" if len(losses) == 1 else "passes"
            self.border_title = f"loss {losses[-1]:.5g} · {len(losses)} forward {passes}"
            finite = [(i + 1, v) for i, v in enumerate(losses) if math.isfinite(v)]
            if finite:
                xs, ys = zip(*finite)
                plt.plot(xs, ys, marker="braille", color="green")
                low, high = min(ys), max(ys)
                if high == low:  # one value: a band around it, or plotext's axis runs wild
                    pad = abs(low) * 0.1 or 1.0
                    low, high = low - pad, high + pad
                plt.ylim(low, high)
                ticks = [low, (low + high) / 2, high]  # plotext's own ticks come unevenly
                plt.yticks(ticks, [f"{t:.4g}" for t in ticks])
            bad = [i + 1 for i, v in enumerate(losses) if not math.isfinite(v)]
            if bad:
                top = max((v for _, v in finite), default=1.0)
                plt.scatter(bad, [top] * len(bad), marker="x", color=_NONFINITE_COLOR)
            plt.xticks(_integer_ticks(len(losses)))
        self.refresh()


class GradFlow(PlotextPlot):
    """Mean |grad| per parameter (input to output), log scale: the gradient's flow."""

    def show_flow(self, flow: list[tuple[str, float]]) -> None:
        """``flow``: (parameter name, mean |grad|) in the model's order."""
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        _style(plt)
        if not flow:
            self.border_title = "gradient flow: no gradients yet"
            self.refresh()
            return
        logs = [math.log10(v) for _, v in flow if math.isfinite(v) and v > 0]
        low = math.floor(min(logs)) if logs else -1
        high = math.ceil(max(logs)) if logs else 0
        if high == low:
            high += 1
        shown = [(i + 1, math.log10(v)) for i, (_, v) in enumerate(flow)
                 if math.isfinite(v) and v > 0]
        if shown:
            xs, ys = zip(*shown)
            plt.scatter(xs, ys, marker="braille", color="cyan")
        zeros = [i + 1 for i, (_, v) in enumerate(flow) if v == 0]
        if zeros:
            plt.scatter(zeros, [low] * len(zeros), marker="dot", color=_ZERO_COLOR)
        bad = [i + 1 for i, (_, v) in enumerate(flow) if not math.isfinite(v)]
        if bad:
            plt.scatter(bad, [high] * len(bad), marker="x", color=_NONFINITE_COLOR)
        decades = list(range(low, high + 1))
        step = max(1, math.ceil(len(decades) / max(2, self.size.height - 3)))
        ticks = decades[::step]
        plt.yticks(ticks, [f"1e{d}" for d in ticks])
        plt.ylim(low, high)
        plt.xlim(0.5, len(flow) + 0.5)
        plt.xticks(*_name_ticks([name for name, _ in flow], self.size.width))
        extra = []
        if zeros:
            extra.append(f"{len(zeros)} zero")
        if bad:
            extra.append(f"{len(bad)} NaN/Inf")
        self.border_title = (f"mean |grad| of {len(flow)} parameters, input → output"
                             + (f" ({', '.join(extra)})" if extra else ""))
        self.refresh()


def _style(plt) -> None:
    plt.theme("textual-design-dark")
    plt.frame(True)


def _integer_ticks(count: int) -> list[int]:
    step = max(1, math.ceil(count / 6))
    return list(range(1, count + 1, step))


def _name_ticks(names: list[str], width: int) -> tuple[list[int], list[str]]:
    """A few x ticks named after the top-level module where it changes (conv1, layer1, ...)."""
    tops = [name.split(".")[0] for name in names]
    starts = [i for i, top in enumerate(tops) if i == 0 or top != tops[i - 1]]
    room = max(2, width // 10)
    if len(starts) > room:
        step = math.ceil(len(starts) / room)
        starts = starts[::step]
    # Labels that would overlap on screen go here, the later one: plotext drops one of
    # two overlapping labels itself, and which one changed from run to run.
    columns = max(width - 8, 1) / max(len(names), 1)  # the plot's columns per parameter
    kept: list[int] = []
    for i in starts:
        if not kept or (i - kept[-1]) * columns >= len(tops[kept[-1]][:9]) + 1:
            kept.append(i)
    return [i + 1 for i in kept], [tops[i][:9] for i in kept]
