"""What one benchmark run measures, checked before any work starts."""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from resnet_lab.errors import ConfigError

SECTIONS = ("train", "infer", "torchvision", "data", "jpeg")

# Lightning's precision names (and their short aliases) that both paths can run the same way:
# autocast around the forward pass and the loss, a GradScaler for float16.
PRECISIONS = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
PRECISION_ALIASES = {"32": "32-true", "bf16": "bf16-mixed", "16": "16-mixed"}


@dataclass(frozen=True)
class BenchSettings:
    model: str = "resnet20"
    sections: tuple[str, ...] = ("train", "infer")
    compare_models: tuple[str, ...] = ("resnet18", "resnet50")
    num_classes: int = 10
    in_chans: int = 3
    image_size: int = 32
    batch_size: int = 128
    precision: str = "32-true"
    channels_last: bool = False
    compile: bool = False
    device: str = "cpu"
    cudnn_benchmark: bool = False
    warmup: int = 3  # untimed steps before each timed block
    steps: int = 20  # timed steps per block
    repeats: int = 5  # timed blocks per path, the paths alternating
    seed: int = 0
    deterministic: bool = False
    progress_bar: bool = False  # also time our path with the progress bar on
    data_root: str | None = None  # jpeg section: an ImageFolder tree; None: one built from photos
    jpeg_images: int = 512  # jpeg section: images in the tree it builds
    loader_workers: int = 2  # jpeg section: worker processes of the throughput measure
    photo_scale: int = 1  # jpeg section: enlarge the photos and crops of the tree it builds
    jpeg_levers: bool = False  # jpeg section: also our loader with one lever changed at a time
    jpeg_device_decode: bool | None = None  # jpeg section: also decoding on --device; None: on a GPU

    def __post_init__(self) -> None:
        object.__setattr__(self, "precision", PRECISION_ALIASES.get(self.precision, self.precision))
        self.check()

    @property
    def decode_on_device(self) -> bool:
        """Whether the jpeg section times the device-decode row (by default on a GPU only)."""
        if self.jpeg_device_decode is None:
            return self.torch_device.type == "cuda"
        return self.jpeg_device_decode

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return PRECISIONS[self.precision]

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context of the forward pass, as Lightning's mixed-precision plugin sets it."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.torch_device.type, dtype=self.autocast_dtype)

    def to_dict(self) -> dict:
        return asdict(self)

    def check(self) -> None:
        for name in ("batch_size", "image_size", "num_classes", "in_chans", "steps", "warmup", "repeats", "jpeg_images", "loader_workers", "photo_scale"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{flag} must be a positive integer, got {value!r}.")
        unknown = [s for s in self.sections if s not in SECTIONS]
        if unknown or not self.sections:
            raise ConfigError(
                f"--sections {','.join(self.sections) or '(empty)'}: choose one or more of "
                f"{', '.join(SECTIONS)} (comma-separated), or all."
            )
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"--precision {self.precision!r} is not supported by the benchmark; choose one of "
                f"{', '.join(PRECISIONS)} (aliases {', '.join(PRECISION_ALIASES)})."
            )
        if self.data_root is not None and not Path(self.data_root).is_dir():
            raise ConfigError(f"--data-root {self.data_root} is not a folder; give an ImageFolder tree (one sub-folder of JPEGs per class).")
        self._check_device()
        if self.precision == "16-mixed" and self.torch_device.type != "cuda":
            raise ConfigError(
                "--precision 16-mixed needs a CUDA device (float16 autocast is GPU-only); on "
                f"{self.device} use --precision bf16-mixed or 32-true."
            )
        if "torchvision" in self.sections and self.in_chans != 3:
            raise ConfigError(
                f"--sections torchvision compares against torchvision's ResNets, which take 3 "
                f"input channels; got --in-chans {self.in_chans}. Drop --in-chans or the section."
            )

    def _check_device(self) -> None:
        try:
            device = torch.device(self.device)
        except RuntimeError:
            raise ConfigError(
                f"--device {self.device!r} is not a device; choose cpu, cuda or cuda:N (mps where available)."
            ) from None
        if device.type == "cpu":
            return
        if device.type == "cuda":
            if not torch.cuda.is_available():
                raise ConfigError(f"--device {self.device}: no CUDA device is visible here; use --device cpu.")
            if device.index is not None and device.index >= torch.cuda.device_count():
                raise ConfigError(
                    f"--device {self.device}: only {torch.cuda.device_count()} CUDA device(s) are visible "
                    f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})."
                )
            return
        if device.type == "mps" and torch.backends.mps.is_available():
            return
        raise ConfigError(f"--device {self.device}: choose cpu, cuda or cuda:N (mps where available).")
