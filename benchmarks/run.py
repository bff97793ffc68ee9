"""gradviz's benchmarks: each row measures gradviz and a baseline side by side, in one run.

    python benchmarks/run.py            # every row
    python benchmarks/run.py chain      # rows whose function name contains "chain"

Not timed tests: CI does not run them. Rows live in ``*_rows.py`` beside this file,
one module per part of gradviz, each with a ``ROWS`` list. Times are the best or
the median of a few repeats (``time.perf_counter``); memory is the process's peak
resident set (VmHWM), in a fresh subprocess so that earlier rows do not count.
"""

from __future__ import annotations

import importlib
import sys

import torch

from common import Row

#: The row modules, in the order the table shows them.
MODULES = ["walker_rows", "stepper_rows", "zoo_rows", "forward_rows", "watch_rows",
           "loop_rows", "app_rows"]


def main(argv: list[str]) -> None:
    pattern = argv[0] if argv else ""
    rows = []
    for module_name in MODULES:
        for bench in importlib.import_module(module_name).ROWS:
            if pattern not in bench.__name__:
                continue
            try:
                for row in bench():
                    rows.append(row)
                    print(f"  {_line(row)}", file=sys.stderr, flush=True)  # as it comes
            except Exception as error:  # one broken row must not lose the others
                row = Row(bench.__name__, "FAILED", type(error).__name__, None, str(error)[:60])
                rows.append(row)
                print(f"  {_line(row)}", file=sys.stderr, flush=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    header = f"{'benchmark':<52} {'gradviz':>12} {'baseline':>22} {'ratio':>7}  target"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(_line(row))


def _line(row: Row) -> str:
    ratio = "" if row.ratio is None else f"{row.ratio:.2f}"
    return (f"{row.name:<52} {row.ours:>12} {row.baseline:>22} {ratio:>7}  {row.target} "
            f"{row.verdict}")


if __name__ == "__main__":
    main(sys.argv[1:])
