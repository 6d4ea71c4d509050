"""``python -m resnet_lab.bench.gpu_check`` (``make gpu-check``): every GPU path in one command.

Runs, each as its own process so that one failure does not hide the others: the training
benchmark (ResNet-50 bf16 channels_last, compiled and not, against the plain loop; our
ResNets against torchvision's), a short ``python -m resnet_lab`` run under each precision with
channels_last and compile, the JPEG loading section with CPU and device decoding, and the
Fashion-MNIST ResNet-18 recipe (time to the published 94.9 % test accuracy). Writes
``gpu_check.json`` and ``gpu_check.log`` into ``--out``; exits 1 if any section failed.

``--device cpu`` runs the same sections at tiny sizes, so CI keeps the command working.
docs/BENCHMARKS.md ("GPU check") says how to run it on a GPU machine and what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FASHION_MNIST_TARGET = 0.949  # ResNet-18, fashion-mnist README benchmark table


@dataclass
class Section:
    name: str
    command: list[str]
    timeout_s: int
    reads: str | None = None  # a JSON file the command writes, or a run directory
    result: dict[str, Any] = field(default_factory=dict)


def _bench(device: str, tiny: bool, out: Path) -> list[Section]:
    common = ["--device", device, "--threads", "2"] if device == "cpu" else ["--device", device]
    if tiny:
        size = ["--model", "resnet20", "--image-size", "16", "--batch-size", "8", "--num-classes", "10",
                "--warmup", "1", "--steps", "2", "--repeats", "1"]
        compare = ["--compare-models", "resnet18", "--image-size", "32", "--batch-size", "2",
                   "--warmup", "1", "--steps", "1", "--repeats", "1"]
        precision = ["--precision", "bf16-mixed"]
    else:
        size = ["--model", "resnet50", "--image-size", "224", "--batch-size", "256", "--num-classes", "1000",
                "--warmup", "10", "--steps", "30", "--repeats", "3", "--cudnn-benchmark"]
        compare = ["--compare-models", "resnet18,resnet50", "--image-size", "224", "--batch-size", "128",
                   "--warmup", "5", "--steps", "20", "--repeats", "3", "--cudnn-benchmark"]
        precision = ["--precision", "bf16-mixed"]
    bench = [sys.executable, "-m", "resnet_lab.bench", *common]
    sections = []
    # compile on the CPU costs minutes of C++ builds (4.5 min for resnet20 at 16 px here).
    for compiled in (False,) if device == "cpu" else (False, True):
        name = f"bench_resnet_bf16_channels_last{'_compiled' if compiled else ''}"
        json_path = out / f"{name}.json"
        sections.append(Section(name, [*bench, "--sections", "train", *size, *precision, "--channels-last",
                                       "--compile" if compiled else "--no-compile", "--json", str(json_path),
                                       "--overwrite"], 600, str(json_path)))
    json_path = out / "bench_ours_vs_torchvision.json"
    sections.append(Section("bench_ours_vs_torchvision", [*bench, "--sections", "torchvision", *compare, *precision,
                                                           "--channels-last", "--json", str(json_path), "--overwrite"],
                            600, str(json_path)))
    return sections


def _train_runs(device: str, tiny: bool, out: Path) -> list[Section]:
    precisions = ("32-true", "bf16-mixed") if device == "cpu" else ("32-true", "16-mixed", "bf16-mixed")
    sections = []
    for precision in precisions:
        run = out / "runs" / f"train_{precision}"
        trainer = ["trainer=cpu"] if device == "cpu" else ["trainer=gpu"]
        size = (["data.image_size=16", "data.train_size=64", "data.val_size=32", "data.test_size=32",
                 "data.batch_size=16", "trainer.max_epochs=1"] if tiny else
                ["data.image_size=32", "data.train_size=20000", "data.val_size=2000", "data.test_size=2000",
                 "data.batch_size=512", "trainer.max_epochs=2"])
        compiled = device != "cpu"
        model = "model=resnet20" if tiny else "model=resnet18_cifar"
        command = [sys.executable, "-m", "resnet_lab", "data=synthetic", model, *trainer, *size,
                   f"trainer.precision={precision}", "module.channels_last=true", f"module.compile={str(compiled).lower()}",
                   "logger=csv", "+trainer.enable_progress_bar=false", f"hydra.run.dir={run}"]
        sections.append(Section(f"train_{precision}", command, 600, str(run)))
    return sections


def _jpeg(device: str, tiny: bool, out: Path) -> list[Section]:
    json_path = out / "bench_jpeg.json"
    size = (["--jpeg-images", "16", "--batch-size", "4", "--image-size", "64", "--warmup", "1", "--steps", "2",
             "--repeats", "1", "--loader-workers", "1", "--threads", "2"] if tiny else
            ["--jpeg-images", "512", "--batch-size", "64", "--image-size", "224", "--warmup", "2", "--steps", "8",
             "--repeats", "3", "--loader-workers", "8"])
    decode = ["--jpeg-device-decode"] if device != "cpu" else []
    command = [sys.executable, "-m", "resnet_lab.bench", "--device", device, "--sections", "jpeg", *size, *decode,
               "--json", str(json_path), "--overwrite"]
    return [Section("jpeg", command, 600, str(json_path))]


SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def _fashion_mnist(device: str, tiny: bool, out: Path, data_root: str | None) -> list[Section]:
    if tiny and data_root is None and not SYSTEM_FASHION_MNIST.is_dir():
        return []  # nothing to read offline (the check on a GPU machine needs the files: docs)
    run = out / "runs" / "fashion_mnist_resnet18"
    command = [sys.executable, "-m", "resnet_lab", "experiment=fashion_mnist_resnet18", "logger=csv",
               "+trainer.enable_progress_bar=false", f"hydra.run.dir={run}"]
    if data_root:
        command += [f"data.root={data_root}", "data.download=false"]
    if tiny:  # a few steps of the recipe on the CPU
        command += ["trainer=cpu", "module.channels_last=false", "trainer.max_epochs=1", "data.batch_size=32",
                    "data.eval_batch_size=32", "+trainer.num_sanity_val_steps=0",
                    "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=2", "+trainer.limit_test_batches=2",
                    "scheduler.warmup_epochs=0.5"]
    return [Section("fashion_mnist_resnet18", command, 600, str(run))]


def _read_run(run_dir: Path) -> dict[str, Any]:
    """A training run's record, and for the Fashion-MNIST recipe the time to the target."""
    record = json.loads((run_dir / "run.json").read_text())
    result = {key: record.get(key) for key in ("status", "epochs_done", "wall_time_s", "best")}
    result["metrics"] = {k: v for k, v in (record.get("metrics") or {}).items()
                         if k.startswith(("test/", "val/acc", "train/images_per_sec"))}
    # Epoch lines carry a timestamp: when did validation accuracy first reach the target?
    log = (run_dir / "train.log").read_text() if (run_dir / "train.log").is_file() else ""
    stamps = re.findall(r"^\[([\d-]+ [\d:,]+)\]\[resnet_lab\]\[INFO\] - epoch (\d+)/\S+ .*?val/acc_top1 ([\d.]+)", log, re.M)
    if stamps:
        from datetime import datetime

        parse = lambda s: datetime.strptime(s, "%Y-%m-%d %H:%M:%S,%f")  # noqa: E731
        start = parse(re.search(r"^\[([\d-]+ [\d:,]+)\]", log, re.M).group(1))
        reached = [(int(epoch), (parse(stamp) - start).total_seconds()) for stamp, epoch, acc in stamps
                   if float(acc) >= FASHION_MNIST_TARGET]
        result["val_acc_target"] = FASHION_MNIST_TARGET
        result["first_epoch_at_target"], result["seconds_to_target"] = reached[0] if reached else (None, None)
    return result


def _run(section: Section, log) -> None:
    started = time.monotonic()
    log.write(f"\n=== {section.name}: {' '.join(section.command)}\n")
    log.flush()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        done = subprocess.run(section.command, stdout=log, stderr=subprocess.STDOUT, timeout=section.timeout_s, env=env)
        section.result["returncode"] = done.returncode
    except subprocess.TimeoutExpired:
        section.result["returncode"] = None
        section.result["error"] = f"timed out after {section.timeout_s} s"
    section.result["seconds"] = round(time.monotonic() - started, 1)
    reads = Path(section.reads) if section.reads else None
    try:
        if reads is not None and reads.suffix == ".json" and reads.is_file():
            section.result["report"] = json.loads(reads.read_text())
        elif reads is not None and (reads / "run.json").is_file():
            section.result["run"] = _read_run(reads)
    except (OSError, ValueError) as error:
        section.result["error"] = f"could not read {reads}: {error}"
    section.result["ok"] = section.result.get("returncode") == 0 and "error" not in section.result
    log.write(f"=== {section.name}: {'ok' if section.result['ok'] else 'FAILED'} in {section.result['seconds']} s\n")
    log.flush()


def _machine(device: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "cpus": os.cpu_count(), "device": device}
    if device != "cpu" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m resnet_lab.bench.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (the check) or cpu (tiny sizes: CI)")
    parser.add_argument("--out", type=Path, default=Path("outputs/gpu_check"), help="folder for gpu_check.json and .log")
    parser.add_argument("--sections", default="bench,train,jpeg,fashion_mnist",
                        help="comma-separated: bench, train, jpeg, fashion_mnist")
    parser.add_argument("--fashion-mnist-root", default=None,
                        help="folder with Fashion-MNIST's four .gz files (default: the data config's search)")
    args = parser.parse_args(argv)
    tiny = args.device == "cpu"
    if args.device != "cpu":
        import torch

        if not torch.cuda.is_available():
            print("error: --device cuda but no CUDA device is visible; use --device cpu for the tiny check.",
                  file=sys.stderr)
            return 2
    args.out.mkdir(parents=True, exist_ok=True)
    builders = {"bench": lambda: _bench(args.device, tiny, args.out), "train": lambda: _train_runs(args.device, tiny, args.out),
                "jpeg": lambda: _jpeg(args.device, tiny, args.out),
                "fashion_mnist": lambda: _fashion_mnist(args.device, tiny, args.out, args.fashion_mnist_root)}
    wanted = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(wanted) - set(builders))
    if unknown:
        print(f"error: --sections {', '.join(unknown)}: choose from {', '.join(builders)}.", file=sys.stderr)
        return 2
    sections = [section for name in wanted for section in builders[name]()]
    report: dict[str, Any] = {"machine": _machine(args.device), "tiny": tiny, "sections": {}}
    with open(args.out / "gpu_check.log", "w") as log:
        for section in sections:
            _run(section, log)
            report["sections"][section.name] = section.result
            (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    failed = [name for name, result in report["sections"].items() if not result["ok"]]
    for name, result in report["sections"].items():
        print(f"{name:42s} {'ok' if result['ok'] else 'FAILED'}  {result['seconds']:7.1f} s")
    print(f"wrote {args.out / 'gpu_check.json'} and {args.out / 'gpu_check.log'}")
    if failed:
        print(f"error: {len(failed)} section(s) failed: {', '.join(failed)}; see {args.out / 'gpu_check.log'}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
