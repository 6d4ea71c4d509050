"""What a data module of image files adds to ``ImageDataModule`` to serve the fast path.

``FastImagePath`` is mixed into the image-file data modules (ImageNet-style trees, class
folders): it builds ``FastImageDataset``s over files or shards, makes the base's training
sampler hand each index to the workers with its epoch (``ShardOrderSampler`` over shards),
decodes on the device when asked (``on_before_batch_transfer``), and turns the uint8
batches into the normalized float32 batches of the data-module contract
(``on_after_batch_transfer``).
``pipeline: torchvision`` leaves all of it out: torchvision's ``v2`` transforms per image,
float32 batches from the workers, as the reference.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

from torch.utils.data import Dataset

from resnet_lab.data.base import UNREADABLE
from resnet_lab.data.device_decode import collate_encoded, decode_batch
from resnet_lab.data.fast_images import (
    BatchFinisher,
    CropPlan,
    FastImageDataset,
    FileSource,
    epoch_seeded,
)
from resnet_lab.data.order import ResumableDistributedSampler
from resnet_lab.errors import ConfigError, DataError

PIPELINES = ("fast", "torchvision")
DECODE_ON = ("workers", "device")
FORMATS = ("files", "shards")


def check_choice(name: str, value, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ConfigError(f"data.{name}={value!r} is not an option; choose one of {', '.join(allowed)}.")
    return value


class FastImagePath:
    """Mixin for ``ImageDataModule`` subclasses that read image files; see the module docstring.

    pipeline: ``fast`` (uint8 crops, normalized on the device) or ``torchvision``.
    decode_on: ``workers`` (libjpeg-turbo in the DataLoader workers) or ``device`` (the
        workers read bytes; ``torchvision.io.decode_jpeg`` decodes the batch on the training
        device: nvJPEG on a GPU).
    fast_dct: libjpeg-turbo's fast IDCT and upsampling (``resnet_lab.data.jpeg``).
    format: ``files`` (a tree of image files) or ``shards`` (WebDataset tar shards written by
        ``python -m resnet_lab.data.shard_writer``).
    shuffle_window: with shards, the samples shuffled together after the shard order.
    """

    reads_shards = False  # whether build_sets reads data.format=shards

    def init_fast_path(
        self,
        *,
        pipeline: str = "fast",
        decode_on: str = "workers",
        fast_dct: bool = False,
        format: str = "files",
        shuffle_window: int = 10_000,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        self.pipeline = check_choice("pipeline", pipeline, PIPELINES)
        self.decode_on = check_choice("decode_on", decode_on, DECODE_ON)
        self.format = check_choice("format", format, FORMATS)
        if self.pipeline == "torchvision" and (decode_on != "workers" or format != "files" or fast_dct):
            raise ConfigError(
                "data.pipeline=torchvision decodes files in the workers with torchvision's transforms; "
                "data.decode_on=device, data.format=shards and data.fast_dct need data.pipeline=fast."
            )
        if self.format == "shards" and not self.reads_shards:
            raise ConfigError(
                f"data.format=shards is read by data=imagenet_subset (the shards of train/ and val/ that "
                f"python -m resnet_lab.data.shard_writer writes), not by {type(self).__name__}; train on shards "
                "with data=imagenet_subset data.format=shards data.subset=null data.num_classes=N."
            )
        if not isinstance(shuffle_window, int) or shuffle_window < 1:
            raise ConfigError(f"data.shuffle_window must be a positive number of samples, got {shuffle_window!r}.")
        self.fast_dct = bool(fast_dct)
        self.shuffle_window = shuffle_window
        self.finisher = BatchFinisher(mean, std)

    @property
    def uses_fast_path(self) -> bool:
        return self.pipeline == "fast"

    def crop_plan(self) -> CropPlan:
        """The fast path's reading of ``self.transforms`` (the ``ImageFileTransforms`` knobs)."""
        t = self.transforms
        return CropPlan(
            image_size=t.image_size, eval_resize_size=t.eval_resize_size, scale=t.scale, ratio=t.ratio,
            flip=t.flip, auto_augment=t.auto_augment, random_erasing=t.random_erasing,
            in_chans=self.in_chans, fast_dct=self.fast_dct,
        )

    def fast_dataset(self, source, *, train: bool) -> FastImageDataset:
        plan = self.crop_plan()
        if plan.auto_augment is not None and self.decode_on == "device":
            raise ConfigError(
                f"data.auto_augment={plan.auto_augment} runs on decoded images in the workers; with "
                "data.decode_on=device the workers do not decode. Set one of them back."
            )
        return FastImageDataset(source, plan, train=train, seed=self.seed, decode_on_device=self.decode_on == "device")

    def file_dataset(self, paths: Sequence[str], labels: Sequence[int], *, train: bool) -> FastImageDataset:
        return self.fast_dataset(FileSource(paths, labels), train=train)

    def shard_dataset(self, root: Path, split: str, *, train: bool, classes: Sequence[str] | None = None) -> FastImageDataset:
        """The ``split`` shards under ``root``; ``classes``: the class list they must hold."""
        from resnet_lab.data.shards import ShardSource

        source = ShardSource(root, split)
        if classes is not None and list(classes) != source.classes:
            raise DataError(
                f"the shards in {root} hold the classes {_listing(source.classes)}, not the "
                f"{len(classes)} asked for ({_listing(classes)}). Write the shards of these classes "
                "(python -m resnet_lab.data.shard_writer --subset ...) or change data.subset / data.num_classes."
            )
        if len(source.classes) != self.num_classes:
            raise ConfigError(
                f"the shards in {root} hold {len(source.classes)} classes but data.num_classes="
                f"{self.num_classes}; set data.num_classes={len(source.classes)}."
            )
        return self.fast_dataset(source, train=train)

    def training_sampler(self, sampler_class: type):
        """The base's choice, handing each index to the workers with its epoch; over shards,
        the shard-local order (unless the balanced sampler draws the order)."""
        if not self.uses_fast_path:
            return super().training_sampler(sampler_class)
        if self.format == "shards" and sampler_class is ResumableDistributedSampler:
            from resnet_lab.data.shards import ShardOrderSampler

            return functools.partial(ShardOrderSampler, window=self.shuffle_window)
        return epoch_seeded(sampler_class)

    def collate_fn(self, dataset: Dataset):
        if isinstance(dataset, FastImageDataset) and dataset.decode_on_device:
            return collate_encoded
        return super().collate_fn(dataset)

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        if not (self.uses_fast_path and self.decode_on == "device"):
            return batch
        payloads, labels, geometry, *extra = batch
        images, failed = decode_batch(payloads, geometry, size=self.image_size, in_chans=self.in_chans, device=self.device)
        return (images, labels.masked_fill(failed, UNREADABLE), *extra)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if not self.uses_fast_path:
            return super().on_after_batch_transfer(batch, dataloader_idx)
        images, labels, *erase_boxes = batch
        images = self.finisher.normalize(images)
        if erase_boxes and self.trainer is not None and self.trainer.training:
            images = self.finisher.erase(images, erase_boxes[0])
        return super().on_after_batch_transfer((images, labels), dataloader_idx)


def _listing(names: Sequence[str]) -> str:
    return ", ".join(names[:5]) + (f", ... ({len(names)} in all)" if len(names) > 5 else "")
