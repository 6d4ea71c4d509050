"""``python -m resnet_lab.export ckpt_path=<run dir|checkpoint> format=onnx|torchscript``.

Writes a trained network for deployment: ONNX (``torch.onnx.export``, batch axis dynamic)
or TorchScript (``torch.jit.script``). The file carries the class names and the evaluation
preprocessing (ONNX: ``metadata_props``; TorchScript: the extra file ``resnet_lab.json``).
Before the file takes its name, it is loaded back in its own runtime (onnxruntime on the
CPU; ``torch.jit.load``) and run on a batch beside the PyTorch model: the largest logit
difference is printed, and an export further off than ``tolerance`` is not kept.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from resnet_lab.configs import command
from resnet_lab.errors import ConfigError, UserError, exit_on_user_error
from resnet_lab.inference import Classifier, load, resolve_checkpoint
from resnet_lab.run_dir import checkpoint_run_dir, temporary_name

log = logging.getLogger("resnet_lab")

SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}
EXPORTS_DIR = "exports"
# The exporter (torch.onnx with dynamo needs onnxscript) and the runtime that checks its file.
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")
TORCHSCRIPT_METADATA = "resnet_lab.json"
INPUT_NAME, OUTPUT_NAME = "images", "logits"
# The ONNX exporter's libraries report each graph rewrite at INFO.
EXPORTER_LOGGERS = ("onnxscript", "onnx_ir", "torch.onnx")


class ExportMismatch(UserError):
    """The exported file does not compute what the PyTorch model computes."""


def metadata(classifier: Classifier) -> dict[str, str]:
    """What a runtime needs besides the graph, as strings (ONNX metadata holds strings):
    the class names and the preprocessing, as JSON."""
    p = classifier.preprocessing
    return {
        "classes": json.dumps(classifier.classes),
        "preprocessing": json.dumps(p.to_dict()),
        "input": (f"{INPUT_NAME}: float32 (batch, {p.in_chans}, {p.crop_size}, {p.crop_size}), "
                  f"{'RGB' if p.in_chans == 3 else 'grey'} scaled to [0, 1], shorter side resized to "
                  f"{p.resize_size} and centre-cropped, minus mean, divided by std"),
        "output": f"{OUTPUT_NAME}: float32 (batch, {len(classifier.classes)}), softmax gives probabilities",
        "checkpoint": str(classifier.checkpoint),
        "ema": json.dumps(classifier.ema),
    }


def default_output(ckpt: Path, fmt: str, ema: bool) -> Path:
    """``<run>/exports/<checkpoint stem>[_ema].<suffix>``, or beside a checkpoint outside a run."""
    run_dir = checkpoint_run_dir(ckpt)
    folder = run_dir / EXPORTS_DIR if run_dir is not None else ckpt.parent
    return folder / f"{ckpt.stem}{'_ema' if ema else ''}{SUFFIXES[fmt]}"


def check_request(cfg: DictConfig) -> tuple[Path, Path]:
    if not cfg.get("ckpt_path"):
        raise ConfigError("ckpt_path is required: python -m resnet_lab.export ckpt_path=<run dir> format=onnx")
    if cfg.get("format") not in SUFFIXES:
        raise ConfigError(f"format={cfg.get('format')!r} is not one of {', '.join(SUFFIXES)}.")
    tolerance = cfg.get("tolerance")
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not tolerance >= 0:
        raise ConfigError(f"tolerance must be a number >= 0 (largest |logit difference|), got {tolerance!r}.")
    size = cfg.get("check_batch_size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigError(f"check_batch_size must be a positive integer, got {size!r}.")
    if cfg.format == "onnx":
        import importlib.util

        absent = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
        if absent:
            raise ConfigError(f"format=onnx needs {', '.join(absent)}: pip install 'resnet-lab[export]'.")
    ckpt = resolve_checkpoint(str(cfg.ckpt_path))
    output = Path(str(cfg.output)).expanduser() if cfg.get("output") else default_output(ckpt, cfg.format, bool(cfg.ema))
    if output.exists() and not cfg.get("overwrite"):
        raise ConfigError(f"output {str(output)!r} exists; choose another name, or pass overwrite=true to replace it.")
    if cfg.get("output") and not output.parent.is_dir():
        raise ConfigError(f"output={str(output)!r}: its folder {str(output.parent)!r} does not exist.")
    return ckpt, output


def write_onnx(classifier: Classifier, example: torch.Tensor, path: Path, opset: int | None) -> None:
    import onnx

    # The exporter prints its progress; it goes to the debug log instead.
    for name in EXPORTER_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    chatter = io.StringIO()
    with contextlib.redirect_stdout(chatter), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            classifier.net, (example,), dynamo=True, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_shapes={"x": {0: torch.export.Dim("batch")}}, opset_version=opset, verbose=False,
        )
    log.debug("%s", chatter.getvalue())
    model = program.model_proto
    onnx.helper.set_model_props(model, metadata(classifier))
    model.doc_string = f"resnet_lab classifier of {len(classifier.classes)} classes"
    onnx.save_model(model, str(path))


def run_onnx(path: Path, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, str]]:
    import onnx
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})
    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return torch.from_numpy(logits), props


def write_torchscript(classifier: Classifier, path: Path) -> None:
    with warnings.catch_warnings():  # TorchScript is deprecated in favour of torch.export
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.script(classifier.net)
        torch.jit.save(scripted, str(path), _extra_files={TORCHSCRIPT_METADATA: json.dumps(metadata(classifier))})


def run_torchscript(path: Path, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, str]]:
    extra = {TORCHSCRIPT_METADATA: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        loaded = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    with torch.inference_mode():
        return loaded(images), json.loads(extra[TORCHSCRIPT_METADATA])


def export(cfg: DictConfig) -> dict[str, Any]:
    ckpt, output = check_request(cfg)
    classifier = load(ckpt, ema=bool(cfg.ema), trusted=bool(cfg.trust_checkpoint), what="ckpt_path")
    p = classifier.preprocessing
    generator = torch.Generator().manual_seed(0)
    # The export traces a batch of 2 (a batch of 1 would be taken for a constant); the check
    # runs another size, so it also shows that the batch axis is dynamic.
    example = torch.randn(2, p.in_chans, p.crop_size, p.crop_size, generator=generator)
    check = torch.randn(int(cfg.check_batch_size), p.in_chans, p.crop_size, p.crop_size, generator=generator)
    with torch.inference_mode():
        expected = classifier.net(check)
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_name(output)
    try:
        if cfg.format == "onnx":
            write_onnx(classifier, example, temporary, cfg.get("opset"))
            logits, props = run_onnx(temporary, check)
            runtime = f"onnxruntime {__import__('onnxruntime').__version__} (CPU)"
        else:
            write_torchscript(classifier, temporary)
            logits, props = run_torchscript(temporary, check)
            runtime = f"torch.jit.load (torch {torch.__version__})"
        difference = float((logits.float() - expected.float()).abs().max())
        if json.loads(props["classes"]) != classifier.classes:
            raise ExportMismatch(f"the class names read back from {temporary} differ from the checkpoint's.")
        if not difference <= float(cfg.tolerance):
            raise ExportMismatch(
                f"the {cfg.format} export computes logits up to {difference:.3g} away from the PyTorch model's "
                f"on a batch of {len(check)} (tolerance {cfg.tolerance}); it was not kept. Pass a larger "
                "tolerance= if that difference is acceptable for your use."
            )
        os.replace(temporary, output)
    finally:
        temporary.unlink(missing_ok=True)
    size_mb = output.stat().st_size / 2**20
    weights = " (EMA weights)" if classifier.ema else ""
    print(f"wrote {output} ({cfg.format}, {size_mb:.1f} MB) from {classifier.checkpoint}{weights}\n"
          f"  {len(classifier.classes)} classes: {', '.join(classifier.classes[:10])}"
          f"{', ...' if len(classifier.classes) > 10 else ''}\n"
          f"  input: {p.in_chans} x {p.crop_size} x {p.crop_size} (shorter side resized to {p.resize_size}, "
          f"centre crop), mean {list(p.mean)}, std {list(p.std)}\n"
          f"  {runtime} vs PyTorch on a batch of {len(check)}: largest |logit difference| "
          f"{difference:.3g} (tolerance {cfg.tolerance})", flush=True)
    return {"output": str(output), "format": cfg.format, "max_abs_difference": difference,
            "classes": classifier.classes, "metadata": props}


@command("export")
def main(cfg: DictConfig) -> dict[str, Any] | None:
    with exit_on_user_error():
        return export(cfg)


if __name__ == "__main__":
    main()
