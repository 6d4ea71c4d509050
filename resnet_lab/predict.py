"""``python -m resnet_lab.predict ckpt_path=<run dir|checkpoint> inputs=<file|folder|glob>``.

Classifies image files with a trained model: each file is decoded as the data modules decode
theirs (JPEG, PNG, WebP, BMP, any mode), preprocessed as the run's test images were
(``resnet_lab.inference``), and classified in batches, on the GPU when there is one. Prints
each file's ``top_k`` classes with their probabilities and writes the same to ``output``
(CSV, or JSON when the name ends in .json). A file that does not decode is listed and
skipped. Every input is checked before anything is read or written.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig
from torch.utils.data import DataLoader, Dataset

from resnet_lab.configs import command
from resnet_lab.data.image_files import IMAGE_SUFFIXES, decode_image_file, is_hidden
from resnet_lab.data.preprocessing import EvalTransform
from resnet_lab.errors import ConfigError, DataError, exit_on_user_error
from resnet_lab.inference import load, top_classes
from resnet_lab.run_dir import atomic_write_text

log = logging.getLogger("resnet_lab")

OUTPUT_SUFFIXES = (".csv", ".json")
GLOB_CHARACTERS = "*?["


def _image_files_under(folder: Path) -> list[Path]:
    files = []
    for directory, subdirectories, names in os.walk(folder):
        subdirectories[:] = sorted(d for d in subdirectories if not is_hidden(d))
        files += [Path(directory) / name for name in sorted(names)
                  if not is_hidden(name) and name.lower().endswith(IMAGE_SUFFIXES)]
    return files


def collect_inputs(inputs: str | Sequence[str]) -> list[Path]:
    """The files ``inputs`` names: files as given, folders searched recursively for image
    files (by suffix), globs expanded (``**`` spans folders); each file once, in order."""
    entries = [inputs] if isinstance(inputs, str) else list(inputs)
    if not entries or not all(isinstance(entry, str) and entry for entry in entries):
        raise ConfigError(f"inputs must be an image file, a folder or a glob (or a list of them); got {inputs!r}.")
    files: list[Path] = []
    for entry in entries:
        path = Path(entry).expanduser()
        if path.is_dir():
            found = _image_files_under(path)
            if not found:
                raise ConfigError(f"inputs: the folder {entry!r} holds no image file ({', '.join(IMAGE_SUFFIXES)}).")
        elif path.is_file():
            found = [path]
        elif any(character in entry for character in GLOB_CHARACTERS):
            found = [Path(p) for p in sorted(glob.glob(os.path.expanduser(entry), recursive=True)) if Path(p).is_file()]
            if not found:
                raise ConfigError(f"inputs: the pattern {entry!r} matches no file.")
        else:
            raise ConfigError(f"inputs: {entry!r} does not exist (give an image file, a folder or a glob).")
        files += found
    return list(dict.fromkeys(files))


class ImageFiles(Dataset):
    """Decoded and preprocessed files; one that does not decode gives its error instead."""

    def __init__(self, files: Sequence[Path], transform: EvalTransform) -> None:
        self.files = [str(file) for file in files]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str]:
        try:
            image = decode_image_file(self.files[index], self.transform.preprocessing.in_chans)
        except (RuntimeError, OSError, ValueError) as error:
            return index, None, str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return index, self.transform(image), ""


def _collate(samples):
    decoded = [(index, image) for index, image, _ in samples if image is not None]
    failed = [(index, error) for index, image, error in samples if image is None]
    indices = [index for index, _ in decoded]
    images = torch.stack([image for _, image in decoded]) if decoded else None
    return indices, images, failed


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"accelerator={name} but no CUDA device is visible; use accelerator=cpu or auto.")
        return torch.device("cuda")
    if name == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"accelerator={name!r} is not one of auto, cpu, gpu.")


def _workers(value: Any, files: int, batch_size: int) -> int:
    if value == "auto":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return 0 if files <= batch_size else min(8, cores)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"num_workers must be an integer >= 0 or auto, got {value!r}.")
    return value


def check_request(cfg: DictConfig) -> tuple[list[Path], Path | None]:
    """Everything that can be checked before the model is loaded: the files and the output."""
    if not cfg.get("ckpt_path"):
        raise ConfigError("ckpt_path is required: python -m resnet_lab.predict ckpt_path=<run dir> inputs=<images>")
    if not cfg.get("inputs"):
        raise ConfigError("inputs is required: an image file, a folder or a glob, e.g. inputs=photos/")
    for key in ("top_k", "batch_size"):
        value = cfg.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{key} must be a positive integer, got {value!r}.")
    inputs = list(cfg.inputs) if isinstance(cfg.inputs, ListConfig) else str(cfg.inputs)
    files = collect_inputs(inputs)
    output = Path(str(cfg.output)).expanduser() if cfg.get("output") else None
    if output is not None:
        if output.suffix.lower() not in OUTPUT_SUFFIXES:
            raise ConfigError(f"output={str(output)!r} must end in .csv or .json (the format written).")
        if output.exists() and not cfg.get("overwrite"):
            raise ConfigError(f"output={str(output)!r} exists; choose another name, or pass overwrite=true to replace it.")
        if not output.parent.is_dir():
            raise ConfigError(f"output={str(output)!r}: its folder {str(output.parent)!r} does not exist.")
    return files, output


def predict(cfg: DictConfig) -> dict[str, Any]:
    files, output = check_request(cfg)
    device = _device(str(cfg.accelerator))
    classifier = load(str(cfg.ckpt_path), ema=bool(cfg.ema), trusted=bool(cfg.trust_checkpoint), what="ckpt_path")
    classifier.net.to(device)
    loader = DataLoader(ImageFiles(files, classifier.transform), batch_size=int(cfg.batch_size),
                        num_workers=_workers(cfg.num_workers, len(files), int(cfg.batch_size)),
                        collate_fn=_collate, pin_memory=device.type == "cuda")
    top_k = min(int(cfg.top_k), len(classifier.classes))
    predictions: dict[int, list[tuple[str, float]]] = {}
    unreadable: dict[int, str] = {}
    for indices, images, failed in loader:
        unreadable.update(failed)
        if images is not None:
            top = top_classes(classifier.probabilities(images.to(device, non_blocking=True)).cpu(),
                              classifier.classes, top_k)
            predictions.update(zip(indices, top))
            # As each batch is done, so that a long listing shows progress.
            print("\n".join(_line(files[i], classes) for i, classes in zip(indices, top)), flush=True)
    if not predictions:
        first = min(unreadable)
        raise DataError(
            f"none of the {len(files)} input file(s) decodes as an image, e.g. {files[first]}: "
            f"{unreadable[first]}. Give JPEG, PNG, WebP or BMP files."
        )
    result = {
        "checkpoint": str(classifier.checkpoint),
        "ema": classifier.ema,
        "predictions": [{"path": str(files[i]), "top_k": [{"class": name, "probability": p} for name, p in top]}
                        for i, top in sorted(predictions.items())],
        "unreadable": [{"path": str(files[i]), "error": error} for i, error in sorted(unreadable.items())],
    }
    if unreadable:
        print(f"skipped {len(unreadable)} file(s) that do not decode as images:", flush=True)
        print("\n".join(f"  {files[i]}: {error}" for i, error in sorted(unreadable.items())), flush=True)
    if output is not None:
        atomic_write_text(output, _json(result) if output.suffix.lower() == ".json" else _csv(result, top_k))
        log.info("wrote %d prediction(s) to %s", len(predictions), output)
    return result


def _line(path: Path, top: list[tuple[str, float]]) -> str:
    return f"{path}: " + ", ".join(f"{name} {probability:.3f}" for name, probability in top)


def _json(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=2) + "\n"


def _csv(result: dict[str, Any], top_k: int) -> str:
    """One row per input file: ``path``, ``class_1``, ``probability_1``, ... and ``error``
    (empty where the file was classified)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", *(f"{key}_{rank}" for rank in range(1, top_k + 1) for key in ("class", "probability")),
                     "error"])
    rows = [(item["path"], item["top_k"], "") for item in result["predictions"]]
    rows += [(item["path"], [], item["error"]) for item in result["unreadable"]]
    for path, top, error in rows:
        cells = [value for c in top for value in (c["class"], f"{c['probability']:.6f}")]
        writer.writerow([path, *cells, *[""] * (2 * top_k - len(cells)), error])
    return buffer.getvalue()


@command("predict")
def main(cfg: DictConfig) -> dict[str, Any] | None:
    with exit_on_user_error():
        return predict(cfg)


if __name__ == "__main__":
    main()
