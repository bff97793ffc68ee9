"""The ``gradviz`` command. torch is imported only inside the commands that need it.

Exit codes: 0 ok, 1 runtime error (one line on stderr; ``--debug`` for the
traceback), 2 usage error.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Sequence
from pathlib import Path

EXPORT_FORMATS = ("dot", "json", "svg", "png", "pdf")  # (gradviz.graph.export's, no torch)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    # What every command that runs a scenario takes besides its name.
    weighted = argparse.ArgumentParser(add_help=False, parents=[common])
    weighted.add_argument("--weights", metavar="PATH", help="a local state dict for the model")
    # What the app may open besides the scenario named: gradviz serve passes --no-files
    # unless --allow-files (the picker's path input runs any .py file on the server).
    apps = argparse.ArgumentParser(add_help=False)
    apps.add_argument("--no-files", dest="files", action="store_false", help=argparse.SUPPRESS)

    parser = argparse.ArgumentParser(
        prog="gradviz",
        description="See PyTorch's autograd graph and step through backward in the terminal.",
        parents=[common, apps],
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    commands.add_parser("list", parents=[common], help="list the built-in demos")

    demo = commands.add_parser("demo", parents=[weighted, apps], help="open the app on a built-in demo")
    demo.add_argument("scenario", metavar="NAME", help="a built-in demo (gradviz list)")

    open_ = commands.add_parser("open", parents=[weighted, apps],
                                help="open the app on a scenario file, or on a training record")
    open_.add_argument("scenario", metavar="FILE",
                       help="a .py file that defines build(), or a RUN.db of gradviz.watch")
    open_.add_argument("--against", metavar="B.db",
                       help="with a record: draw this record's run beside it, and where they "
                       "part (gradviz diff)")

    export = commands.add_parser(
        "export",
        parents=[weighted],
        help="write a scenario's autograd graph to DOT, JSON, SVG, PNG or PDF, or a "
        "training record to TensorBoard",
        description="Run the scenario's forward pass once and write its autograd graph; or "
        "write a training record's scalars as TensorBoard event files "
        "(gradviz export RUN.db --tensorboard DIR).",
    )
    export.add_argument("scenario", metavar="NAME_OR_FILE",
                        help="a built-in demo or a .py file, or a RUN.db with --tensorboard")
    export.add_argument("--tensorboard", metavar="DIR",
                        help="write the record's loss, gradient norms, lr and per-layer "
                        "|grad| and |Δ|/|p| as TensorBoard event files in DIR")
    export.add_argument("--run", type=_positive, metavar="N",
                        help="with --tensorboard: which run of the record (default: the latest)")
    export.add_argument(
        "-o", "--output", metavar="PATH",
        help="where to write (default: NAME.FORMAT here; '-' for stdout with dot or json)",
    )
    export.add_argument(
        "--format", choices=EXPORT_FORMATS,
        help="output format (default: from the -o suffix, else dot)",
    )
    export.add_argument("--saved", action="store_true", help="draw saved tensors as nodes")
    export.add_argument(
        "--no-modules", dest="modules", action="store_false", help="no module clusters"
    )

    train = commands.add_parser(
        "train",
        parents=[weighted],
        help="train a scenario headless and print its losses and update ratios",
        description="Run N training iterations (forward, backward through the stepper, "
        "optimizer step) and print a table of losses and |update|/|param|.",
    )
    train.add_argument("scenario", metavar="NAME_OR_FILE", help="a built-in demo or a .py file")
    train.add_argument("--steps", type=_positive, default=10, metavar="N",
                       help="training iterations (default 10)")

    serve = commands.add_parser(
        "serve",
        parents=[weighted],
        help="serve the app to a web browser (one app per browser tab)",
        description="Serve the app through textual-serve: each browser tab that opens the "
        "page runs its own `gradviz demo/open` process. For a projector, a classroom or a "
        "colleague without a terminal; the page needs no internet. Anyone who can reach "
        "the port can run the scenario and the built-in demos (and, with --allow-files, "
        "any .py file this machine can read).",
    )
    serve.add_argument("scenario", nargs="?", metavar="NAME_OR_FILE",
                       help="a built-in demo or a .py file (default: the picker)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1; 0.0.0.0 for the network)")
    serve.add_argument("--port", type=_port, default=8000, help="port (default 8000)")
    serve.add_argument("--public-url", metavar="URL",
                       help="the address browsers use, when it is not http://HOST:PORT")
    serve.add_argument("--allow-files", action="store_true",
                       help="let the page open scenario files by path (runs any .py file "
                       "this machine can read: only on a network that is yours)")
    report = commands.add_parser(
        "report",
        parents=[common],
        help="summarize a training record written by gradviz.watch",
        description="Print a record's run on one screen: iterations, loss range, the first "
        "NaN/Inf and where it started, audits, and layers whose updates are out of band; for "
        "a distributed run, where its ranks parted. Several records (one per host) are read "
        "as one job.",
    )
    report.add_argument("record", metavar="RUN.db", nargs="+",
                        help="a record (gradviz.watch(record=...)); several: one per host")
    report.add_argument("--run", type=_positive, metavar="N",
                        help="which run of the record (default: the latest)")
    report.add_argument("--thorough", action="store_true",
                        help="compare the ranks row by row, not from their totals first")

    diff = commands.add_parser(
        "diff",
        parents=[common],
        help="compare two training records: where the runs part, and which layers parted most",
        description="Compare run B with run A iteration by iteration (the loss, the total "
        "gradient norm, the learning rate, every parameter's gradient, parameter and update "
        "norm) and name the first iteration where they part beyond the tolerance, what parted "
        "there, and the layers ranked by how far their gradient norms parted.",
    )
    diff.add_argument("a", metavar="A.db", help="a record (gradviz.watch(record=...))")
    diff.add_argument("b", metavar="B.db", help="the record to compare with it")
    diff.add_argument("--run-a", type=_positive, metavar="N", help="A's run (default: latest)")
    diff.add_argument("--run-b", type=_positive, metavar="N", help="B's run (default: latest)")
    diff.add_argument("--rtol", type=_tolerance, default=1e-6,
                      help="relative tolerance (default 1e-6)")
    diff.add_argument("--atol", type=_tolerance, default=1e-12,
                      help="absolute tolerance (default 1e-12)")
    diff.add_argument("--thorough", action="store_true",
                      help="search every parameter row, not from the first total that differs")
    return parser


def _port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 1 to 65535, got {value}")
    return value


def _tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from gradviz.version import __version__

        print(f"gradviz {__version__}")
        return 0
    command = {None: cmd_app, "demo": cmd_app, "open": cmd_app, "list": cmd_list,
               "export": cmd_export, "train": cmd_train, "serve": cmd_serve,
               "report": cmd_report, "diff": cmd_diff}[args.command]
    from gradviz.errors import GradvizError

    try:
        return command(args, parser)
    except GradvizError as error:
        if args.debug:
            raise
        print(f"gradviz: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # a bug of ours: say so in one line, the rest with --debug
        if args.debug:
            raise
        from gradviz.errors import one_line

        print(f"gradviz: internal error: {one_line(error)} (run with --debug for the "
              "traceback, and please report it)", file=sys.stderr)
        return 1


def cmd_app(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """The app: a picker with no argument, else straight into the scenario."""
    from gradviz.errors import GradvizError
    from gradviz.model.catalog import BUILTIN_NAMES, check_file

    scenario = getattr(args, "scenario", None)
    if args.command == "demo" and scenario not in BUILTIN_NAMES:
        parser.error(f"no demo named {scenario!r}: choose one of {', '.join(BUILTIN_NAMES)}")
    # Arguments fail here, in one line, before the app takes the screen.
    from gradviz.model.runs.schema import looks_like_record

    against = getattr(args, "against", None)
    if args.command == "open" and looks_like_record(scenario):  # gradviz.watch's record
        from gradviz.tui.screens.run_view import (
            make_record_app,  # no torch: a record is plain data
        )

        # reads them; RecordError on a bad file, or on two runs of different models
        record_app = make_record_app(scenario, against=against)
        if not has_terminal():
            raise GradvizError("the app needs a terminal (stdin and stderr are not one): "
                               f"gradviz report {scenario} prints the run instead")
        record_app.run()
        return record_app.return_code or 0
    if against is not None:
        parser.error("--against compares two records: gradviz open A.db --against B.db")
    if args.command == "open" and scenario in BUILTIN_NAMES and not Path(scenario).exists():
        raise GradvizError(f"{scenario} is a built-in demo, not a file: gradviz demo "
                           f"{scenario} opens it")
    if args.command == "open":
        check_file(scenario, "scenario file")
    if getattr(args, "weights", None):
        check_file(args.weights, "weights file")
    if not has_terminal():
        raise GradvizError("the app needs a terminal (stdin and stderr are not one): run it "
                           "in a terminal, or use gradviz train / gradviz export headless")
    from gradviz.tui.app import run_app

    return run_app(scenario, weights=getattr(args, "weights", None), files=args.files)


def has_terminal() -> bool:
    """The app reads keys from stdin and draws on stderr: see :mod:`gradviz.runtime.where`."""
    from gradviz.runtime.where import has_terminal as terminal

    return terminal()


def cmd_list(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from gradviz.model.catalog import builtin_scenarios  # reads docstrings; no torch

    infos = builtin_scenarios()
    width = max(len(info.name) for info in infos)
    for info in infos:
        print(f"{info.name:<{width}}  {info.description}")
    print("\nexport one: gradviz export NAME [-o FILE.dot|.json|.svg|.png]")
    return 0


def cmd_export(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from gradviz.model.runs.schema import looks_like_record

    if args.tensorboard is not None or looks_like_record(args.scenario):
        return _export_record(args, parser)
    if args.run is not None:
        parser.error("--run picks a run of a record: gradviz export RUN.db --tensorboard DIR")
    fmt = _export_format(args, parser)
    if args.output == "-" and fmt not in ("dot", "json"):
        parser.error(f"--format {fmt} cannot go to stdout; give -o FILE.{fmt}")

    from gradviz.graph import export
    from gradviz.session.scenario import load_scenario

    scenario = load_scenario(args.scenario, weights=args.weights)
    graph = scenario.trace().graph
    target = args.output or f"{scenario.name}.{fmt}"
    if fmt in export.DRAWN:
        export.render(graph, target, fmt, modules=args.modules, saved=args.saved)
    elif fmt == "json":
        text = export.to_json(graph, None if target == "-" else target)
    else:
        text = export.to_dot(graph, None if target == "-" else target,
                             modules=args.modules, saved=args.saved)
    if target == "-":
        sys.stdout.write(text)
    else:
        print(
            f"wrote {target}: {graph.number_of_nodes()} nodes, {graph.number_of_edges()} edges",
            file=sys.stderr,
        )
    return 0


def _export_record(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """A training record's scalars to TensorBoard (no torch; the tensorboard package)."""
    from gradviz.model.runs.schema import looks_like_record

    if args.tensorboard is None:
        parser.error(f"a record exports to TensorBoard: gradviz export {args.scenario} "
                     "--tensorboard DIR")
    if not looks_like_record(args.scenario):
        parser.error("--tensorboard exports a training record: gradviz export RUN.db "
                     "--tensorboard DIR")
    if args.output or args.format or args.saved or not args.modules or args.weights:
        parser.error("-o, --format, --saved, --no-modules and --weights are for a scenario's "
                     "graph, not a record")
    from gradviz.integrations.tensorboard import export_tensorboard

    done = export_tensorboard(args.scenario, args.tensorboard, run=args.run)
    print(f"wrote {done.logdir}: run {done.run}, {done.iterations} iterations, {done.layers} "
          f"layers, {done.scalars} scalars (tensorboard --logdir {done.logdir})",
          file=sys.stderr)
    return 0


def cmd_train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from gradviz.session.scenario import load_scenario
    from gradviz.session.session import Session

    console = Console()
    session = Session(load_scenario(args.scenario, weights=args.weights))
    rows = _SampledRows()
    last = origin = None
    origin_number = 0
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn())
    try:
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task(session.scenario.name, total=args.steps, loss="-")
            # Rows are numbered by iteration run: the session's own count is of optimizer
            # steps, which stays 0 in a scenario without an optimizer.
            for number in range(1, args.steps + 1):
                last = session.train_iteration()
                rows.add(_iteration_row(number, last))
                if origin is None and last.first_nonfinite is not None:
                    origin, origin_number = last, number
                progress.update(task, advance=1, loss=f"{last.loss:.6g}")
    except KeyboardInterrupt:  # keep what finished: print it, then say where it stopped
        session.close()
        if rows.count:
            console.print(_iterations_table(rows.rows))
        print(f"gradviz: interrupted after {rows.count} of {args.steps} iterations",
              file=sys.stderr)
        return 130
    console.print(_iterations_table(rows.rows))
    if session.scenario.train_note:
        console.print(f"note: {session.scenario.train_note}", soft_wrap=True, highlight=False)
    if last.update is not None:
        console.print(_update_table(last.update))
    if origin is not None:
        event = origin.first_nonfinite
        where = f" in module {event.module}" if event.module else ""
        console.print(f"[red]first non-finite gradient[/]: iteration {origin_number}, "
                      f"node {event.node} ({event.op}){where}", soft_wrap=True)
    failed = [c for c in last.checks if not c.passed]
    for check in last.checks:
        mark = "[green]pass[/]" if check.passed else "[red]FAIL[/]"
        console.print(f"check {check.name}: {mark} {check.detail}", soft_wrap=True)
    return 1 if failed else 0


class _SampledRows:
    """At most 2 x ``keep`` table rows, evenly spaced over however many iterations ran:
    when full, every other row goes and the spacing doubles (a long run stays small)."""

    def __init__(self, keep: int = 20):
        self.keep = keep
        self.count = 0
        self._sampled: list[tuple] = []
        self._latest: tuple | None = None
        self._every = 1

    def add(self, row: tuple) -> None:
        if self.count % self._every == 0:
            self._sampled.append(row)
            if len(self._sampled) >= 2 * self.keep:
                self._sampled = self._sampled[::2]
                self._every *= 2
        self.count += 1
        self._latest = row

    @property
    def rows(self) -> list[tuple]:
        """The sampled rows, and the latest one always."""
        if self._latest is None or (self._sampled and self._sampled[-1] is self._latest):
            return list(self._sampled)
        return [*self._sampled, self._latest]


def _iteration_row(number: int, report) -> tuple:
    """(iteration, loss, median |Δ|/|p|, largest |Δ|/|p|, its parameter) of one iteration."""
    ratios = [] if report.update is None else sorted(
        (p.ratio, p.name) for p in report.update.updated if p.ratio is not None)
    median = ratios[len(ratios) // 2][0] if ratios else None
    top, name = ratios[-1] if ratios else (None, "-")
    return number, report.loss, median, top, name


def cmd_serve(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """The app in a browser: textual-serve runs ``gradviz demo|open`` per tab."""
    from gradviz.serve import serve

    if args.weights is not None and args.scenario is None:
        parser.error("--weights needs a scenario")
    serve(args.scenario, host=args.host, port=args.port, public_url=args.public_url,
          weights=args.weights, allow_files=args.allow_files, debug=args.debug)
    return 0


def _iterations_table(rows: list[tuple]):
    from rich.table import Table

    table = Table(title="training", title_justify="left")
    for name in ("iteration", "loss", "median |Δ|/|p|", "max |Δ|/|p|", "largest update"):
        table.add_column(name, justify="left" if name == "largest update" else "right")
    for iteration, loss, median, top, name in rows:
        table.add_row(str(iteration), f"{loss:.6g}", "-" if median is None else f"{median:.3g}",
                      "-" if top is None else f"{top:.3g}", name)
    return table


def _update_table(update):
    from rich.table import Table

    table = Table(title=f"last {update.optimizer} step: the 10 largest |update|/|param|",
                  title_justify="left")
    for name in ("parameter", "shape", "|grad|", "|Δ|", "|Δ|/|p|", "state"):
        table.add_column(name, justify="left" if name in ("parameter", "state") else "right")
    ranked = sorted(update.updated, key=lambda p: -(p.ratio or 0.0))[:10]
    for p in ranked:
        ratio = "|p| was 0" if p.ratio is None else f"{p.ratio:.3g}"
        table.add_row(p.name, str(p.shape), f"{p.grad.norm:.3g}", f"{p.update.norm:.3g}",
                      ratio, ", ".join(p.state))
    skipped = [p for p in update.params if not p.updated]
    if skipped:
        kinds = ", ".join(sorted({p.skipped for p in skipped}))
        table.caption = f"{len(skipped)} skipped ({kinds})"
    return table


def cmd_report(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """A record's run as Rich tables; reads the file read-only and needs no torch."""
    from rich.console import Console
    from rich.table import Table

    from gradviz.model.runs.history import RunRecord
    from gradviz.model.runs.ranks import compare_ranks, find_job
    from gradviz.model.runs.report import WatchReport

    if args.run is not None and len(args.record) > 1:
        parser.error("--run picks a run of one record: give one RUN.db with it")
    job = find_job(args.record, run=args.run)  # the job of --run's run, or the newest
    path, run = (args.record[0], args.run) if args.run is not None else (job.lead.path,
                                                                         job.lead.run)
    with RunRecord(path) as record:
        report = WatchReport.of(functools.partial(record.history, run),
                                source=" + ".join(args.record))
    if job.world_size > 1:
        report.ranks = compare_ranks(job, thorough=args.thorough)
    console = Console()
    console.print(report.headline(), soft_wrap=True, highlight=False)
    for path in job.unused:
        console.print(f"{path}: no run of this job (its runs started at another time or "
                      "with another world size)", soft_wrap=True, highlight=False, style="dim")
    for section in report.sections():
        table = Table(title=section.title, title_justify="left", caption=section.note or None,
                      caption_justify="left", show_header=any(section.columns))
        for column in section.columns:
            table.add_column(column, overflow="fold")
        for row in section.rows:
            table.add_row(*row)
        console.print(table)
    return 0


def cmd_diff(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Where run B parts from run A; reads both files read-only and needs no torch."""
    from rich.console import Console
    from rich.table import Table

    from gradviz.model.runs.diff import WINDOW, diff_runs, verdict_text
    from gradviz.model.runs.tolerance import Tolerance

    result = diff_runs(args.a, args.b, run_a=args.run_a, run_b=args.run_b,
                       tolerance=Tolerance(args.rtol, args.atol), thorough=args.thorough)
    console = Console()
    say = lambda text, **style: console.print(text, soft_wrap=True, highlight=False, **style)
    say(f"A: {args.a} run {result.run_a}, B: {args.b} run {result.run_b}; tolerance "
        f"{result.tolerance} (NaN agrees only with NaN)")
    say(verdict_text(result), style="bold")
    if result.parted_at is None:
        return 0
    parted = result.parted_at
    table = Table(title=f"what parted at iteration {parted}", title_justify="left")
    for column in ("number", "A", "B"):
        table.add_column(column, justify="left" if column == "number" else "right")
    for found in result.differences[:ROWS_SHOWN]:
        table.add_row(found.what, _number(found.a), _number(found.b))
    if len(result.differences) > ROWS_SHOWN:
        table.caption = f"and {len(result.differences) - ROWS_SHOWN} more"
        table.caption_justify = "left"
    console.print(table)
    end = parted + WINDOW - 1
    over = (f"{parted}..{end} and the last" if end < result.compared
            else f"{parted}..{result.compared}")  # a short run: to its end
    layers = Table(title="layers, by how far their |grad| parted", title_justify="left",
                   caption=f"relative difference of the layer's gradient norm, over iterations "
                   f"{over}", caption_justify="left")
    for column in ("layer", "parted at", "largest rel. difference", f"at {parted}"):
        layers.add_column(column, justify="left" if column == "layer" else "right")
    for layer in result.layers[:ROWS_SHOWN]:
        layers.add_row(layer.layer or "(model)", "-" if layer.first is None else str(layer.first),
                       f"{layer.largest:.3g}", f"{layer.at_parting:.3g}")
    if len(result.layers) > ROWS_SHOWN:
        layers.caption += f"; and {len(result.layers) - ROWS_SHOWN} more layers"
    console.print(layers)
    return 0


#: Rows of a diff's tables shown; the rest are counted under them.
ROWS_SHOWN = 12


def _number(value: float | None) -> str:
    return "NaN" if value is None else f"{value:.9g}"


def _export_format(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    """What the file will hold: what its suffix says (x.pdf is a PDF, drawn by Graphviz),
    else --format, else DOT. A suffix gradviz cannot write, or one that --format
    contradicts, is refused: the file would hold something else than its name says."""
    output = args.output
    suffix = Path(output).suffix.lstrip(".").lower() if output and output != "-" else ""
    if suffix and suffix not in EXPORT_FORMATS:
        parser.error(f"cannot export to .{suffix}: give -o a file ending in "
                     f"{', '.join('.' + f for f in EXPORT_FORMATS)}")
    if suffix and args.format and args.format != suffix:
        parser.error(f"-o {output} says {suffix}, --format says {args.format}: "
                     "give one of them, or make them agree")
    return suffix or args.format or "dot"


def run() -> None:
    """Console-script entry point.

    Exits without tearing the heap down: after ``q`` on a 200,000-node graph, freeing
    it one object at a time took 2 to 3 s, with nothing left to save (output is
    written, files closed and the terminal restored by then).
    """
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader that went away (gradviz list | head -1)
            pass
    os._exit(code)


if __name__ == "__main__":
    run()
