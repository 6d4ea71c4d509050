"""``python -m resnet_lab.bench``: see ``resnet_lab.bench`` and docs/BENCHMARKS.md."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from resnet_lab.bench.settings import PRECISION_ALIASES, PRECISIONS, SECTIONS, BenchSettings
from resnet_lab.errors import ConfigError, UserError

DEFAULTS = BenchSettings()


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m resnet_lab.bench",
        description=(
            "Training and inference throughput of our Lightning path against a plain PyTorch "
            "loop, and of our ResNets against torchvision's: warm-up excluded, device "
            "synchronized at window boundaries, paths alternating in one process, medians of "
            "repeated blocks."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    what = p.add_argument_group("what to measure")
    what.add_argument("--sections", default=",".join(DEFAULTS.sections),
                      help=f"comma-separated, from {', '.join(SECTIONS)}; or all")
    what.add_argument("--model", default=DEFAULTS.model, help="model of the train and infer sections (python -m resnet_lab.models lists them)")
    what.add_argument("--compare-models", default=",".join(DEFAULTS.compare_models),
                      help="models of the torchvision section (names both have)")
    shape = p.add_argument_group("input")
    shape.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size)
    shape.add_argument("--image-size", type=int, default=DEFAULTS.image_size)
    shape.add_argument("--in-chans", type=int, default=DEFAULTS.in_chans)
    shape.add_argument("--num-classes", type=int, default=DEFAULTS.num_classes)
    jpeg = p.add_argument_group("jpeg section")
    jpeg.add_argument("--data-root", default=None, help="an ImageFolder tree of JPEGs (default: one built from scikit-learn's sample photos)")
    jpeg.add_argument("--jpeg-images", type=int, default=DEFAULTS.jpeg_images, help="images in the tree it builds")
    jpeg.add_argument("--loader-workers", type=int, default=DEFAULTS.loader_workers, help="worker processes of the throughput measure")
    jpeg.add_argument("--photo-scale", type=int, default=DEFAULTS.photo_scale, help="enlarge the photos and crops of the built tree (large images)")
    jpeg.add_argument("--jpeg-levers", action=argparse.BooleanOptionalAction, default=DEFAULTS.jpeg_levers,
                      help="also time our loader with one lever changed at a time (fast DCT, float in workers, torchvision tensors)")
    jpeg.add_argument("--jpeg-device-decode", action=argparse.BooleanOptionalAction, default=DEFAULTS.jpeg_device_decode,
                      help="also time decoding on --device (torchvision.io.decode_jpeg: nvJPEG on a GPU); default: on a GPU")
    run = p.add_argument_group("how to run")
    run.add_argument("--device", default=DEFAULTS.device, help="cpu, cuda or cuda:N")
    run.add_argument("--precision", default=DEFAULTS.precision,
                     help=f"{', '.join(PRECISIONS)} (or {', '.join(PRECISION_ALIASES)})")
    run.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=DEFAULTS.channels_last,
                     help="NHWC memory format for network and inputs")
    run.add_argument("--compile", action=argparse.BooleanOptionalAction, default=DEFAULTS.compile,
                     help="torch.compile the network (nn.Module.compile, as the trainer.compile option does)")
    run.add_argument("--cudnn-benchmark", action=argparse.BooleanOptionalAction, default=DEFAULTS.cudnn_benchmark,
                     help="let cuDNN pick the fastest convolution algorithms (lightning.Trainer's benchmark)")
    run.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=DEFAULTS.deterministic,
                     help="deterministic algorithms (lightning.Trainer's deterministic)")
    run.add_argument("--progress-bar", action=argparse.BooleanOptionalAction, default=DEFAULTS.progress_bar,
                     help="train section: also time our path with Lightning's default progress bar on, "
                     "as python -m resnet_lab runs it (the bar prints while it runs)")
    run.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    run.add_argument("--seed", type=int, default=DEFAULTS.seed)
    timing = p.add_argument_group("timing")
    timing.add_argument("--warmup", type=int, default=DEFAULTS.warmup, help="untimed steps before each timed block")
    timing.add_argument("--steps", type=int, default=DEFAULTS.steps, help="timed steps per block")
    timing.add_argument("--repeats", type=int, default=DEFAULTS.repeats, help="timed blocks per path")
    out = p.add_argument_group("output")
    out.add_argument("--json", type=Path, default=None, help="also write the report to this JSON file")
    out.add_argument("--overwrite", action="store_true", help="replace an existing --json file or --profile folder's files")
    out.add_argument("--profile", type=Path, default=None, metavar="DIR",
                     help="instead of the sections: profile the training steps of --model in both paths "
                     "(torch.profiler and cProfile) and write the tables and traces to DIR")
    return p


def settings_from(args: argparse.Namespace) -> BenchSettings:
    sections = SECTIONS if args.sections.strip() == "all" else _names(args.sections)
    return BenchSettings(
        model=args.model,
        sections=sections,
        compare_models=_names(args.compare_models),
        num_classes=args.num_classes,
        in_chans=args.in_chans,
        image_size=args.image_size,
        batch_size=args.batch_size,
        precision=args.precision,
        channels_last=args.channels_last,
        compile=args.compile,
        device=args.device,
        cudnn_benchmark=args.cudnn_benchmark,
        warmup=args.warmup,
        steps=args.steps,
        repeats=args.repeats,
        seed=args.seed,
        deterministic=args.deterministic,
        progress_bar=args.progress_bar,
        data_root=args.data_root,
        jpeg_images=args.jpeg_images,
        loader_workers=args.loader_workers,
        photo_scale=args.photo_scale,
        jpeg_levers=args.jpeg_levers,
        jpeg_device_decode=args.jpeg_device_decode,
    )


def check_output(path: Path | None, overwrite: bool) -> None:
    if path is None:
        return
    if path.exists() and not overwrite:
        raise ConfigError(f"--json {path} exists; choose another path or pass --overwrite to replace it.")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise ConfigError(f"--json {path}: {parent} is not a writable directory; create it or choose another path.")


def check_profile_dir(path: Path | None, overwrite: bool) -> None:
    if path is not None and path.exists() and (not path.is_dir() or any(path.iterdir())) and not overwrite:
        raise ConfigError(f"--profile {path} exists and is not an empty folder; choose another or pass --overwrite.")


def quiet_lightning() -> None:
    """Lightning's per-fit banners (GPU available, tips) would repeat once per timed block."""
    import lightning  # noqa: F401  (its import sets these loggers' levels; override them after)

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)


def set_up_process(settings: BenchSettings, threads: int | None) -> None:
    """Checks that need the model registry, then the process-wide settings every path shares."""
    import torch

    from resnet_lab.bench.sections import check_names

    check_names(settings)
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"--threads must be a positive integer, got {threads}.")
        torch.set_num_threads(threads)
    # The values lightning.Trainer sets from its benchmark and deterministic arguments, set
    # here too so that the paths without a Trainer run under the same flags.
    torch.backends.cudnn.benchmark = settings.cudnn_benchmark
    if settings.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(settings.deterministic)
    quiet_lightning()


def run(settings: BenchSettings, args: argparse.Namespace, argv: list[str]) -> dict:
    from resnet_lab.bench.machine import load_average, machine_info
    from resnet_lab.bench.report import build_payload
    from resnet_lab.bench.results import SectionResult
    from resnet_lab.bench.sections import run_sections

    set_up_process(settings, args.threads)
    started = time.perf_counter()
    before = load_average()
    result: SectionResult = run_sections(settings)
    return build_payload(
        settings,
        result,
        machine=machine_info(settings.torch_device),
        command=["python", "-m", "resnet_lab.bench", *argv],
        load_average={"before": before, "after": load_average()},
        wall_time_s=time.perf_counter() - started,
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser().parse_args(argv)
    try:
        settings = settings_from(args)
        if args.profile is not None and args.json is not None:
            raise ConfigError("--profile writes its own files and no --json report; give one of the two.")
        check_output(args.json, args.overwrite)
        check_profile_dir(args.profile, args.overwrite)
        if args.profile is not None:
            from resnet_lab.bench.step_profile import profile_training

            set_up_process(settings, args.threads)
            print(profile_training(settings, args.profile))
            return 0
        payload = run(settings, args, argv)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from resnet_lab.bench.report import format_table, write_json

    print(format_table(payload))
    if args.json is not None:
        write_json(args.json, payload)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
