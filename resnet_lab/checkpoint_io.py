"""Lightning's checkpoint IO with crash-safe writes and safe reads.

Lightning's ``TorchCheckpointIO`` writes through an fsspec transaction: a temporary file in
the *system* temp directory, then ``shutil.move`` onto the target, which across file systems
(node-local ``/tmp``, shared run directory) is a copy that overwrites ``last.ckpt`` in
place, unsynced. ``AtomicCheckpointIO`` writes and reads through ``resnet_lab.checkpoint_files``
(temporary file next to the target, fsync, ``os.replace``; ``weights_only`` reads).
docs/RELIABILITY.md has the whole story.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

from resnet_lab.checkpoint_files import load_checkpoint_file, save_checkpoint_file


def _is_local(path) -> bool:
    return type(get_filesystem(str(path))).__name__ == "LocalFileSystem"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Args:
    trusted: load checkpoints with full unpickling (``weights_only=False``); only for files
        whose origin the user vouches for.
    """

    def __init__(self, trusted: bool = False) -> None:
        super().__init__()
        self.trusted = trusted

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        save_checkpoint_file(checkpoint, path)

    def load_checkpoint(
        self, path, map_location: Callable | Any = lambda storage, loc: storage, weights_only: bool | None = None
    ) -> dict[str, Any]:
        if not _is_local(path):
            return super().load_checkpoint(path, map_location=map_location, weights_only=not self.trusted)
        return load_checkpoint_file(path, trusted=self.trusted, map_location=map_location)


def with_checkpoint_io(plugins: Any, *, trusted: bool) -> list[Any]:
    """Trainer ``plugins`` (configs or objects) plus ``AtomicCheckpointIO``, unless one of
    them already is a ``CheckpointIO``."""
    from hydra.utils import instantiate
    from lightning.fabric.plugins import CheckpointIO

    if plugins is None:
        plugins = []
    elif not isinstance(plugins, (list, tuple)):
        plugins = [plugins]
    built = [instantiate(p) if isinstance(p, Mapping) and "_target_" in p else p for p in plugins]
    if not any(isinstance(p, CheckpointIO) for p in built):
        built.append(AtomicCheckpointIO(trusted=trusted))
    return built
