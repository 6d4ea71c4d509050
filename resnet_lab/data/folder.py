"""``data=folder``: your own images, as a folder of class folders or a CSV index.

The classes are the class folders' names (or the index's labels), sorted; ``num_classes``
comes from them through the config (``${folder_classes:...}``, see conf/data/folder.yaml) and
is checked here against what the data holds. The splits are the data's own where it has them
(``train/``, ``val/``, ``test/`` folders, or a ``split`` column), and otherwise drawn from the
training images, stratified by class and seeded with ``split_seed``. Decoding, transforms,
checks and skipping of unreadable images are the image-file base's
(``resnet_lab.data.image_files``), shared with the ImageNet module.
"""

from __future__ import annotations

import logging
from pathlib import Path

from resnet_lab.data.folder_sources import open_source
from resnet_lab.data.image_files import ImageFileDataModule, stratified_split
from resnet_lab.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def _fraction(name: str, value) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value < 1.0:
        raise ConfigError(f"data.{name} is a fraction of each class's images in [0, 1), got {value!r}.")
    return float(value)


class FolderDataModule(ImageFileDataModule):
    """Image files of your own, in class folders or listed in a CSV index.

    root: ``root/<class>/*`` or ``root/{train,val,test}/<class>/*`` (JPEG, PNG, WebP, BMP).
    index: instead of ``root``, a CSV file of ``path,label[,split]`` rows, paths relative to it.
    num_classes: the number of classes the data holds (the config counts them); a different
        number is an error.
    val_fraction, test_fraction: the share of each class's training images drawn for
        validation / test when the data has no such split (at least one image per class).
    split_seed: seed of that draw; it does not depend on the run's seed.
    The transform knobs are ``ImageFileDataModule``'s, the loader options ``ImageDataModule``'s.
    """

    def __init__(
        self,
        *,
        root: str | Path | None = None,
        index: str | Path | None = None,
        num_classes: int | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        **options,
    ) -> None:
        self.val_fraction = _fraction("val_fraction", val_fraction)
        self.test_fraction = _fraction("test_fraction", test_fraction)
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ConfigError(
                f"data.val_fraction + data.test_fraction = {val_fraction + test_fraction} leaves no "
                "training images; keep their sum below 1 (e.g. 0.1 and 0.1)."
            )
        self.data_source = open_source(root, index)
        classes = self.data_source.classes()
        if len(classes) < 2:
            raise DataError(
                f"{self.data_source.describe()} holds {len(classes)} class{'es' if len(classes) != 1 else ''}"
                f"{': ' + classes[0] if classes else ''}; a classifier needs at least two. "
                + ("Add a folder of images per class." if index is None else "Add rows with other labels.")
            )
        if num_classes is not None and num_classes != len(classes):
            raise ConfigError(
                f"data.num_classes={num_classes}, but {self.data_source.describe()} holds {len(classes)} classes "
                f"({', '.join(classes[:8])}{', ...' if len(classes) > 8 else ''}). Remove the override: "
                "the number is counted from the data."
            )
        super().__init__(num_classes=len(classes), classes=classes, **options)
        self.split_seed = split_seed

    def build_sets(self) -> None:
        samples = self.data_source.samples(self.classes)
        paths, labels = samples["train"]
        drawn = {}
        for split, fraction in (("val", self.val_fraction), ("test", self.test_fraction)):
            if split in samples:
                continue
            if fraction == 0:
                raise ConfigError(
                    f"data.{split}_fraction=0, but {self.data_source.describe()} has no {split} split to "
                    f"use instead. Set data.{split}_fraction > 0 (e.g. 0.1) or give the data a {split} split."
                )
            drawn[split] = fraction
        index = stratified_split(labels, drawn, self.split_seed, class_names=self.classes,
                                 source=self.data_source.describe())
        for split in drawn:
            samples[split] = ([paths[i] for i in index[split]], [labels[i] for i in index[split]])
        samples["train"] = ([paths[i] for i in index["train"]], [labels[i] for i in index["train"]])
        self.train_set = self.image_dataset(*samples["train"], train=True)
        self.val_set = self.image_dataset(*samples["val"], train=False)
        self.test_set = self.image_dataset(*samples["test"], train=False)
        log.info(
            "%s: %d classes; %d training, %d validation, %d test images%s",
            self.data_source.describe(), self.num_classes, len(self.train_set), len(self.val_set),
            len(self.test_set), f" (drawn from train: {', '.join(drawn)})" if drawn else "",
        )
