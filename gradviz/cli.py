"""The ``gradviz`` command. torch is imported only inside the commands that need it.

Exit codes: 0 ok, 1 runtime error (one line on stderr; ``--debug`` for the
traceback), 2 usage error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

EXPORT_FORMATS = ("dot", "json", "svg", "png")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks of errors")

    parser = argparse.ArgumentParser(
        prog="gradviz",
        description="See PyTorch's autograd graph and step through backward in the terminal.",
        parents=[common],
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    commands.add_parser("list", parents=[common], help="list the built-in demos")

    demo = commands.add_parser("demo", parents=[common], help="open the app on a built-in demo")
    demo.add_argument("scenario", metavar="NAME", help="a built-in demo (gradviz list)")
    demo.add_argument("--weights", metavar="PATH", help="a local state dict for the model")

    open_ = commands.add_parser("open", parents=[common], help="open the app on a scenario file")
    open_.add_argument("scenario", metavar="FILE", help="a .py file that defines build()")
    open_.add_argument("--weights", metavar="PATH", help="a local state dict for the model")

    export = commands.add_parser(
        "export",
        parents=[common],
        help="write a scenario's autograd graph to DOT, JSON, SVG or PNG",
        description="Run the scenario's forward pass once and write its autograd graph.",
    )
    export.add_argument("scenario", metavar="NAME_OR_FILE", help="a built-in demo or a .py file")
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
    export.add_argument("--weights", metavar="PATH", help="a local state dict for the model")

    train = commands.add_parser(
        "train",
        parents=[common],
        help="train a scenario headless and print its losses and update ratios",
        description="Run N training iterations (forward, backward through the stepper, "
        "optimizer step) and print a table of losses and |update|/|param|.",
    )
    train.add_argument("scenario", metavar="NAME_OR_FILE", help="a built-in demo or a .py file")
    train.add_argument("--steps", type=_positive, default=10, metavar="N",
                       help="training iterations (default 10)")
    train.add_argument("--weights", metavar="PATH", help="a local state dict for the model")

    report = commands.add_parser(
        "report",
        parents=[common],
        help="summarize a training record written by gradviz.watch",
        description="Print a record's run on one screen: iterations, loss range, the first "
        "NaN/Inf and where it started, audits, and layers whose updates are out of band.",
    )
    report.add_argument("record", metavar="RUN.db", help="a record (gradviz.watch(record=...))")
    report.add_argument("--run", type=_positive, metavar="N",
                        help="which run of the record (default: the latest)")
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from gradviz import __version__

        print(f"gradviz {__version__}")
        return 0
    command = {None: cmd_app, "demo": cmd_app, "open": cmd_app, "list": cmd_list,
               "export": cmd_export, "train": cmd_train, "report": cmd_report}[args.command]
    from gradviz.core.errors import GradvizError

    try:
        return command(args, parser)
    except GradvizError as error:
        if args.debug:
            raise
        print(f"gradviz: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def cmd_app(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """The app: a picker with no argument, else straight into the scenario."""
    scenario = getattr(args, "scenario", None)
    if args.command == "demo":
        from gradviz.core.catalog import BUILTIN_NAMES

        if scenario not in BUILTIN_NAMES:
            parser.error(f"no demo named {scenario!r}: choose one of {', '.join(BUILTIN_NAMES)}")
    if args.command == "open" and not Path(scenario).expanduser().is_file():
        from gradviz.core.errors import ScenarioError

        raise ScenarioError(f"{scenario}: no such scenario file")
    from gradviz.tui.app import run_app

    return run_app(scenario, weights=getattr(args, "weights", None), debug=args.debug)


def cmd_list(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from gradviz.core.catalog import builtin_scenarios  # reads docstrings; no torch

    infos = builtin_scenarios()
    width = max(len(info.name) for info in infos)
    for info in infos:
        print(f"{info.name:<{width}}  {info.description}")
    print("\nexport one: gradviz export NAME [-o FILE.dot|.json|.svg|.png]")
    return 0


def cmd_export(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    fmt = args.format or _format_from_suffix(args.output) or "dot"
    if args.output == "-" and fmt not in ("dot", "json"):
        parser.error(f"--format {fmt} cannot go to stdout; give -o FILE.{fmt}")

    from gradviz.core import export
    from gradviz.core.scenario import load_scenario

    scenario = load_scenario(args.scenario, weights=args.weights)
    graph = scenario.trace().graph
    target = args.output or f"{scenario.name}.{fmt}"
    if fmt in ("svg", "png"):
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


def cmd_train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from gradviz.core.scenario import load_scenario
    from gradviz.core.session import Session

    console = Console()
    session = Session(load_scenario(args.scenario, weights=args.weights))
    reports = []
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(session.scenario.name, total=args.steps, loss="-")
        for _ in range(args.steps):
            reports.append(session.train_iteration())
            progress.update(task, advance=1, loss=f"{reports[-1].loss:.6g}")
    console.print(_iterations_table(reports))
    if reports[-1].update is not None:
        console.print(_update_table(reports[-1].update))
    origin = next((r for r in reports if r.first_nonfinite is not None), None)
    if origin is not None:
        event = origin.first_nonfinite
        where = f" in module {event.module}" if event.module else ""
        console.print(f"[red]first non-finite gradient[/]: iteration {origin.iteration}, "
                      f"node {event.node} ({event.op}){where}", soft_wrap=True)
    failed = [c for c in reports[-1].checks if not c.passed]
    for check in reports[-1].checks:
        mark = "[green]pass[/]" if check.passed else "[red]FAIL[/]"
        console.print(f"check {check.name}: {mark} {check.detail}", soft_wrap=True)
    return 1 if failed else 0


def _iterations_table(reports):
    from rich.table import Table

    table = Table(title="training", title_justify="left")
    for name in ("iteration", "loss", "median |Δ|/|p|", "max |Δ|/|p|", "largest update"):
        table.add_column(name, justify="left" if name == "largest update" else "right")
    shown = reports if len(reports) <= 20 else [
        reports[round(i * (len(reports) - 1) / 19)] for i in range(20)]
    for report in shown:
        ratios = [] if report.update is None else sorted(
            (p.ratio, p.name) for p in report.update.updated)
        median = f"{ratios[len(ratios) // 2][0]:.3g}" if ratios else "-"
        top = ratios[-1] if ratios else (None, "-")
        table.add_row(str(report.iteration), f"{report.loss:.6g}", median,
                      "-" if top[0] is None else f"{top[0]:.3g}", top[1])
    return table


def _update_table(update):
    from rich.table import Table

    table = Table(title=f"last {update.optimizer} step: the 10 largest |update|/|param|",
                  title_justify="left")
    for name in ("parameter", "shape", "|grad|", "|Δ|", "|Δ|/|p|", "state"):
        table.add_column(name, justify="left" if name in ("parameter", "state") else "right")
    ranked = sorted(update.updated, key=lambda p: -p.ratio)[:10]
    for p in ranked:
        table.add_row(p.name, str(p.shape), f"{p.grad.norm:.3g}", f"{p.update.norm:.3g}",
                      f"{p.ratio:.3g}", ", ".join(p.state))
    skipped = [p for p in update.params if not p.updated]
    if skipped:
        table.caption = f"{len(skipped)} skipped ({', '.join(sorted({p.skipped for p in skipped}))})"
    return table


def cmd_report(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """A record's run as Rich tables; reads the file read-only and needs no torch."""
    from rich.console import Console
    from rich.table import Table

    from gradviz.core.run_record import RunRecord
    from gradviz.core.watch_report import REPORT_POINTS, WatchReport

    with RunRecord(args.record) as record:
        report = WatchReport(record.history(args.run, points=REPORT_POINTS), source=args.record)
    console = Console()
    console.print(report.headline(), soft_wrap=True, highlight=False)
    for section in report.sections():
        table = Table(title=section.title, title_justify="left", caption=section.note or None,
                      caption_justify="left", show_header=any(section.columns))
        for column in section.columns:
            table.add_column(column, overflow="fold")
        for row in section.rows:
            table.add_row(*row)
        console.print(table)
    return 0


def _format_from_suffix(output: str | None) -> str | None:
    if not output or output == "-":
        return None
    suffix = Path(output).suffix.lstrip(".").lower()
    return suffix if suffix in EXPORT_FORMATS else None


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
