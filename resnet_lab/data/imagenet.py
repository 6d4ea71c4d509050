"""ImageNet-style JPEG trees restricted to a class subset, and fast.ai's Imagenette releases.

The tree is ``root/train/<wnid>/*.JPEG`` and ``root/val/<wnid>/*.JPEG`` (the layout of
torchvision's ``ImageFolder`` and of the Imagenette archives). Class ``i`` is the ``i``-th
wnid of the subset in sorted order, as ``ImageFolder`` numbers them. The tree is checked
whole in ``setup`` (missing split folders, unknown wnids, empty class folders, files that are
not images) so that bad input fails before the first step; an image that does not decode
mid-epoch is skipped, counted and logged instead.

Images decode in DataLoader worker processes (``num_workers``); decoding, the transforms and
their knobs are shared with the folder data module (``resnet_lab.data.image_files``).
"""

from __future__ import annotations

from pathlib import Path

from resnet_lab.data.archives import RemoteFile, extract_tar, fetch
from resnet_lab.data.image_files import (
    ImageFileDataModule,
    class_folder_names,
    random_holdout,
    scan_class_folders,
)
from resnet_lab.data.imagenet_classes import class_name, resolve_subset
from resnet_lab.errors import ConfigError, DataError

# fast.ai's Imagenette archives, as torchvision.datasets.Imagenette lists them.
IMAGENETTE_RELEASES: dict[str, RemoteFile] = {
    "imagenette2": RemoteFile(
        "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2.tgz", "fe2fc210e6bb7c5664d602c3cd71e612"
    ),
    "imagenette2-320": RemoteFile(
        "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-320.tgz", "3df6f0d01a2c9592104656642f5e78a3"
    ),
    "imagenette2-160": RemoteFile(
        "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz", "e793b78cc4c9e9a4ccc0c1155377a412"
    ),
}


def scan_tree(tree: Path, wnids: tuple[str, ...], *, listed_in: str) -> dict[str, tuple[list[str], list[int]]]:
    """{split: (paths, labels)} of ``tree``'s train and val images of ``wnids``, fully checked."""
    return {
        split: scan_class_folders(
            tree / split,
            wnids,
            missing=lambda folder, wnid: (
                f"unknown wnid {wnid} in {listed_in}: {folder} does not exist. Remove it from "
                f"the list, or add its images to {tree / 'train'} and {tree / 'val'}."
            ),
            empty=lambda folder, wnid: (
                f"{folder} holds no images. Add the images of class {wnid} or drop the class from the subset."
            ),
        )
        for split in ("train", "val")
    }


class ImageNetSubsetDataModule(ImageFileDataModule):
    """An ImageNet-style tree restricted to ``subset``, or an Imagenette release.

    root: the folder that holds ``train/`` and ``val/`` (with ``release``: the folder the
        release's archive is downloaded to and extracted in, e.g. ``root/imagenette2-160``).
    subset: ``imagenette``, ``imagewoof``, ``imagenet100``, the path of a file with one wnid per
        line, or None for the first ``num_classes`` classes of the tree (in sorted order).
        ``num_classes`` must equal the subset's size.
    release: an Imagenette release (``imagenette2``, ``imagenette2-320``, ``imagenette2-160``)
        to download when ``download`` is set.
    val_size: training images held out for validation with ``split_seed``; 0: validate on
        ``val/``. The test set is always ``val/``.
    format: ``shards``: ``root`` holds the shards of ``train/`` and ``val/`` written by
        ``python -m resnet_lab.data.shard_writer`` (``train.json``, ``val.json``); ``subset``, when
        given, must be the classes they hold.
    The transform knobs (``image_size``, ``scale``, ``ratio``, ``auto_augment``, ...) are
    ``ImageFileDataModule``'s.
    """

    reads_shards = True

    def __init__(
        self,
        *,
        root: str | Path,
        num_classes: int,
        subset: str | None = None,
        release: str | None = None,
        download: bool = False,
        in_chans: int = 3,
        val_size: int = 0,
        split_seed: int = 0,
        **options,
    ) -> None:
        wnids, listed_in = resolve_subset(subset)
        if wnids is not None and len(wnids) != num_classes:
            raise ConfigError(
                f"data.subset={subset} has {len(wnids)} classes but data.num_classes={num_classes}; "
                f"set data.num_classes={len(wnids)}."
            )
        if in_chans != 3:
            raise ConfigError(f"ImageNet images are decoded to RGB: data.in_chans must be 3, got {in_chans}.")
        if release is not None and release not in IMAGENETTE_RELEASES:
            raise ConfigError(
                f"data.release={release!r} is not an Imagenette release; choose one of "
                f"{', '.join(IMAGENETTE_RELEASES)} or null."
            )
        if not isinstance(val_size, int) or val_size < 0:
            raise ConfigError(f"data.val_size must be an integer >= 0 (0: validate on val/), got {val_size!r}.")
        # Run directories saved before scale and auto_augment named them so; they still resume.
        if "min_scale" in options:
            options["scale"] = (options.pop("min_scale"), 1.0)
        if options.pop("trivial_augment", False):
            options["auto_augment"] = "trivialaugment"
        super().__init__(
            num_classes=num_classes,
            in_chans=in_chans,
            classes=[class_name(wnid) for wnid in sorted(wnids)] if wnids else None,
            **options,
        )
        self.root = Path(root).expanduser()
        self.release = release
        self.download = download
        self.wnids = tuple(sorted(wnids)) if wnids else None
        self.listed_in = listed_in
        self.val_size = val_size
        self.split_seed = split_seed
        if self.format == "shards" and (release is not None or val_size):
            raise ConfigError(
                "data.format=shards reads train.json and val.json shards from data.root: set "
                "data.release=null (releases are trees; write their shards with python -m "
                "resnet_lab.data.shards) and data.val_size=0 (validation reads the val shards)."
            )

    @property
    def tree(self) -> Path:
        return self.root / self.release if self.release else self.root

    def prepare_data(self) -> None:
        """Download and extract the Imagenette release if its tree is not there yet."""
        if self.release is None or ((self.tree / "train").is_dir() and (self.tree / "val").is_dir()):
            return
        archive = fetch(IMAGENETTE_RELEASES[self.release], self.root, download=self.download)
        extract_tar(archive, self.root)

    def _class_folders(self) -> tuple[str, ...]:
        for split in ("train", "val"):
            if not (self.tree / split).is_dir():
                hint = (
                    " Set data.download=true to fetch the release." if self.release else
                    " ImageNet's official validation images come in one flat folder: sort them "
                    "into class folders first (e.g. with the valprep.sh script of the PyTorch "
                    "ImageNet example)."
                )
                raise DataError(
                    f"{self.tree} has no {split}/ folder; expected the layout "
                    f"{self.tree}/train/<wnid>/*.JPEG and {self.tree}/val/<wnid>/*.JPEG.{hint}"
                )
        if self.wnids is not None:
            return self.wnids
        folders = class_folder_names(self.tree / "train")
        if len(folders) < self.num_classes:
            raise DataError(
                f"{self.tree / 'train'} has {len(folders)} class folders, fewer than "
                f"data.num_classes={self.num_classes}. Lower data.num_classes or add classes."
            )
        return tuple(folders[: self.num_classes])

    def build_sets(self) -> None:
        if self.format == "shards":
            self.train_set = self.shard_dataset(self.root, "train", train=True, classes=self.wnids)
            self.test_set = self.val_set = self.shard_dataset(self.root, "val", train=False, classes=self.train_set.source.classes)
            self.wnids = tuple(self.train_set.source.classes)
            self.classes = [class_name(wnid) for wnid in self.wnids]
            return
        wnids = self._class_folders()
        self.wnids = wnids
        self.classes = [class_name(wnid) for wnid in wnids]
        samples = scan_tree(self.tree, wnids, listed_in=self.listed_in)
        paths, labels = samples["train"]
        if not self.val_size < len(paths):
            raise ConfigError(
                f"data.val_size={self.val_size} must be smaller than the {len(paths)} training "
                f"images of {self.tree / 'train'} in this subset."
            )
        train_index, val_index = random_holdout(len(paths), self.val_size, self.split_seed)

        def pick(index: list[int], *, train: bool):
            return self.image_dataset([paths[i] for i in index], [labels[i] for i in index], train=train)

        self.train_set = pick(train_index, train=True)
        self.test_set = self.image_dataset(*samples["val"], train=False)
        self.val_set = pick(val_index, train=False) if self.val_size else self.test_set
