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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from gradviz import __version__

        print(f"gradviz {__version__}")
        return 0
    command = {None: cmd_list, "list": cmd_list, "export": cmd_export}[args.command]
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
