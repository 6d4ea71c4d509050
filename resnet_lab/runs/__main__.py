"""``python -m resnet_lab.runs`` (also ``resnet-lab``): list, show, compare, plot and rank runs.

Reads run directories only (``run.json``, ``.hydra/``, ``csv/metrics.csv`` or TensorBoard
events): works offline, on copies, and while runs are still going.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from resnet_lab.errors import UserError
from resnet_lab.runs.discovery import find_runs, resolve_dir, resolve_run
from resnet_lab.runs.tables import (
    SORT_KEYS,
    STATUSES,
    compare_data,
    compare_tables,
    list_table,
    select_rows,
    show_data,
    show_renderables,
)

EXAMPLES = """\
examples:
  python -m resnet_lab.runs list --model 'resnet*' --status finished --sort best_val_acc
  python -m resnet_lab.runs show 2024-05-01_12-00-00_ab12cd
  python -m resnet_lab.runs compare RUN_A RUN_B
  python -m resnet_lab.runs plot outputs/multiruns/2024-05-01_12-00-00_ab12cd -o errors.png
  python -m resnet_lab.runs plot RUN_A RUN_B --metric val/acc_top1 --metric 'grad_norm/*'
  python -m resnet_lab.runs sweep outputs/multiruns/2024-05-01_12-00-00_ab12cd

RUN is a run directory or its id (or a unique start of it) as `list` prints it.
"""


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", type=Path, default=Path("outputs"),
                        help="where the runs are (default: outputs)")
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON instead of tables")

    program = "resnet-lab" if Path(sys.argv[0]).name == "resnet-lab" else "python -m resnet_lab.runs"
    parser = argparse.ArgumentParser(
        prog=program, description="List, show, compare, plot and rank the runs under outputs/.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    listing = commands.add_parser("list", parents=[common, as_json], help="a table of the runs")
    listing.add_argument("--experiment", help="only this experiment (shell patterns allowed)")
    listing.add_argument("--model", help="only this model (shell patterns allowed)")
    listing.add_argument("--data", help="only this data set (shell patterns allowed)")
    listing.add_argument("--tag", help="only runs with this tag (shell patterns allowed)")
    listing.add_argument("--status", help=f"only these statuses, comma-separated: {', '.join(STATUSES)}")
    listing.add_argument("--sort", default="date", choices=SORT_KEYS, help="column to sort by (default: date)")
    listing.add_argument("--reverse", action="store_true", help="sort descending")

    show = commands.add_parser("show", parents=[common, as_json], help="config and final metrics of a run")
    show.add_argument("run", metavar="RUN")

    compare = commands.add_parser("compare", parents=[common, as_json],
                                  help="config keys that differ and metrics, side by side")
    compare.add_argument("runs", nargs="+", metavar="RUN")

    plot = commands.add_parser("plot", parents=[common], help="learning curves as an image")
    plot.add_argument("runs", nargs="+", metavar="RUN", help="a run, or a multirun directory for all its jobs")
    plot.add_argument("--metric", action="append", help="metric to plot, shell patterns allowed "
                      "('grad_norm/*'); repeat for more panels (default: training and validation "
                      "error, plain and residual nets side by side)")
    plot.add_argument("-o", "--output", type=Path, default=Path("curves.png"),
                      help="image file (default: curves.png; .png, .pdf, .svg)")

    sweep = commands.add_parser("sweep", parents=[common, as_json],
                                help="the jobs of a multirun ranked by the optimized metric")
    sweep.add_argument("sweep_dir", metavar="SWEEP_DIR")
    return parser


def _console() -> Console:
    # Piped output keeps whole rows rather than wrapping them to 80 columns.
    width = None if sys.stdout.isatty() else max(shutil.get_terminal_size((200, 24)).columns, 200)
    return Console(width=width, soft_wrap=False, highlight=False)


def _print_json(payload) -> None:
    print(json.dumps(payload, indent=2, default=str))


def run_command(args: argparse.Namespace) -> int:
    console = _console()
    root: Path = args.root
    if args.command == "list":
        runs = find_runs(root)
        rows = select_rows(runs, experiment=args.experiment, model=args.model, data=args.data, tag=args.tag,
                           status=args.status, sort=args.sort, reverse=args.reverse)
        if args.json:
            _print_json(rows)
        elif not runs:
            console.print(f"no runs under {root}/ yet; start one with `python -m resnet_lab`.")
        elif not rows:
            console.print(f"none of the {len(runs)} runs under {root}/ match the filters.")
        else:
            console.print(list_table(rows))
        return 0
    if args.command == "show":
        data = show_data(resolve_run(args.run, root))
        if args.json:
            _print_json(data)
        else:
            for item in show_renderables(data):
                console.print(item)
        return 0
    if args.command == "compare":
        runs = [resolve_run(run, root) for run in args.runs]
        if len(runs) < 2:
            raise UserError("compare needs at least two runs, e.g. `compare RUN_A RUN_B`.")
        data = compare_data(runs)
        if args.json:
            _print_json(data)
        else:
            for table in compare_tables(data):
                console.print(table)
        return 0
    if args.command == "plot":
        from resnet_lab.runs.plot import check_output, plot_runs, runs_of

        check_output(args.output)
        warnings = plot_runs(runs_of(args.runs, root), args.metric, args.output)
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
        print(f"wrote {args.output}")
        return 0
    if args.command == "sweep":
        from resnet_lab.runs.sweep import sweep_data, sweep_renderables

        data = sweep_data(resolve_dir(args.sweep_dir, root), root)
        if args.json:
            _print_json(data)
        else:
            for item in sweep_renderables(data):
                console.print(item)
        return 0
    raise AssertionError(args.command)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return run_command(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `... | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
