"""The training data order, and the place in it where a resumed run continues.

The order of training samples is a pure function of (seed, epoch, rank): a
``DistributedSampler`` with a seed, reshuffled by ``set_epoch``. What a resumed run also
needs is the *position* inside the epoch it was interrupted in. Lightning restores its loop
counters from the checkpoint (``fit_loop.epoch_loop.batch_progress``) and continues the
epoch at batch ``k``, but a map-style ``DataLoader`` starts the epoch over from its first
batch: the run would train on the first ``k`` batches twice and never see the last ``k``
(Lightning warns "your dataloader is not resumable"). ``ResumableDistributedSampler`` asks
the trainer where it resumes and skips the indices of the batches already trained on, so
nothing is loaded or decoded for them.

Reading Lightning's own restored counters, rather than keeping a copy in a callback, keeps
the data position and the loop position one number: they cannot disagree.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

if TYPE_CHECKING:
    import lightning as L


def resumed_position(trainer: L.Trainer | None) -> tuple[int, int] | None:
    """``(epoch, batches)`` when ``trainer`` is resuming a fit from a checkpoint, else None.

    ``epoch`` is the epoch Lightning continues (the value it passes to ``set_epoch``);
    ``batches`` how many training batches of it the checkpoint had already trained on.
    After the first epoch of a resumed fit Lightning clears ``restarting`` and this returns
    None again.
    """
    if trainer is None or not trainer.training or not trainer.fit_loop.is_resuming:
        return None
    loop = trainer.fit_loop
    epoch = loop.epoch_progress.current.processed
    batches = loop.epoch_loop.batch_progress
    if not loop.epoch_loop.restarting or batches.is_last_batch:
        # The checkpoint's epoch was trained to its end: the iterator built now serves the
        # next epoch (or none, when Lightning builds a fresh one after finishing the
        # checkpoint's validation).
        return (epoch if not loop.epoch_loop.restarting else epoch + 1), 0
    # `processed` counts batches whose optimizer step ran: a checkpoint saved in
    # on_train_batch_end (every N steps) has processed = completed + 1, one saved after the
    # batch (validation end) has processed = completed. Either way it is the number of
    # batches the saved weights have seen.
    return epoch, batches.current.processed


class ResumableDistributedSampler(DistributedSampler):
    """A ``DistributedSampler`` that continues a resumed epoch where the checkpoint left it.

    Arguments are those of ``DistributedSampler`` plus ``trainer``, the Lightning trainer
    whose restored progress says where to continue (None: a plain ``DistributedSampler``).
    The same (seed, epoch, rank) give the same order; a resumed epoch yields only the
    indices after the ``batches x batch_size`` already trained on. ``start_index`` holds how
    many indices the current pass skipped, for loaders that seed per-batch augmentation by
    batch number.
    """

    def __init__(self, dataset: Dataset, *, trainer: L.Trainer | None = None, **kwargs) -> None:
        super().__init__(dataset, **kwargs)
        self._trainer = trainer
        self.start_index = 0
        if trainer is not None:
            # Lightning warns on a mid-epoch resume unless the *loader* has state_dict(); with
            # this sampler the epoch does continue where it stopped, so the warning is wrong.
            warnings.filterwarnings("ignore", message=r"You're resuming from a checkpoint that ended before the epoch ended")

    def __iter__(self) -> Iterator[int]:
        position = resumed_position(self._trainer)
        skip = 0
        if position is not None:
            epoch, batches = position
            # Set the epoch here too: a loader with worker processes draws its first indices
            # when its iterator is created, which Lightning 2.6 does before it calls
            # set_epoch on a resumed run (Lightning issue #21938).
            self.set_epoch(epoch)
            skip = batches * self._per_device_batch_size()
        indices = self.epoch_indices()
        self.start_index = min(skip, len(indices))
        return iter(indices[self.start_index:])

    def epoch_indices(self) -> list[int]:
        """This rank's indices of the whole current epoch (``DistributedSampler``'s order)."""
        return list(super().__iter__())

    def _per_device_batch_size(self) -> int:
        loader = self._trainer.train_dataloader if self._trainer is not None else None
        batch_size = getattr(loader, "batch_size", None)
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise RuntimeError(
                "ResumableDistributedSampler needs the training loader's batch_size to find its "
                f"place in a resumed epoch; {type(loader).__name__} has batch_size={batch_size!r}"
            )
        return batch_size


class BalancedDistributedSampler(ResumableDistributedSampler):
    """Each class drawn about equally often: a weighted draw with replacement, sharded and
    resumed like ``ResumableDistributedSampler``.

    weights: one non-negative weight per sample (1 / its class's count balances the classes).
    Every epoch draws ``total_size`` indices (the data set's size, less the remainder under
    DDP) from a generator seeded with (seed, epoch), the same on every rank; rank r takes
    every world-size-th draw from r, as ``DistributedSampler`` shards its permutation. The
    epoch keeps its usual length, so a rare class's images repeat and a common class's are
    partly left out.
    """

    def __init__(self, dataset: Dataset, *, weights, **kwargs) -> None:
        super().__init__(dataset, **kwargs)
        self.weights = torch.as_tensor(weights, dtype=torch.double)
        if self.weights.shape != (len(dataset),) or not bool((self.weights >= 0).all()) or not self.weights.sum() > 0:
            raise ValueError("weights must hold one non-negative weight per sample, not all zero")

    def epoch_indices(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        drawn = torch.multinomial(self.weights, self.total_size, replacement=True, generator=generator)
        return drawn[self.rank : self.total_size : self.num_replicas].tolist()


class DeferredStartDataLoader(DataLoader):
    """A ``DataLoader`` whose worker processes start, and draw their first indices, at the
    first batch asked for instead of when its iterator is created.

    Lightning creates the training iterator early when ``configure_optimizers`` reads
    ``trainer.estimated_stepping_batches``, which is before a resumed run's loop state is
    restored; worker processes then prefetch the start of the epoch at once, before
    ``ResumableDistributedSampler`` can know where the checkpoint left it, and the resumed
    epoch would start over (loader without workers draw lazily, and were not affected).
    """

    def __iter__(self) -> Iterator:
        return _DeferredIterator(super().__iter__)


class _DeferredIterator:
    def __init__(self, start) -> None:
        self._start = start
        self._iterator = None

    def __iter__(self) -> _DeferredIterator:
        return self

    def __next__(self):
        if self._iterator is None:
            self._iterator = self._start()
        return next(self._iterator)
