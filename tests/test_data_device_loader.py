"""The device-resident loader continues a resumed epoch exactly where the sampler says."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from resnet_lab.data.augment import Normalize, SmallImageAugment
from resnet_lab.data.device_loader import DeviceResidentLoader
from resnet_lab.data.in_memory import UInt8ImageDataset
from resnet_lab.data.order import ResumableDistributedSampler
from tests.helpers import resumed_trainer

BATCH = 4
NORMALIZE = Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
AUGMENT = SmallImageAugment(pad=2, flip=True, random_erasing=0.5)


def loader(images, labels, *, rank: int, trainer=None) -> DeviceResidentLoader:
    sampler = ResumableDistributedSampler(
        range(len(labels)), num_replicas=2, rank=rank, shuffle=True, seed=5, drop_last=True, trainer=trainer
    )
    sampler.set_epoch(2)
    return DeviceResidentLoader(
        images, labels, sampler=sampler, batch_size=BATCH, drop_last=True, normalize=NORMALIZE, augment=AUGMENT
    )


@pytest.mark.parametrize("rank", (0, 1))
@pytest.mark.parametrize("done", (1, 3, 9))
def test_a_resumed_epoch_yields_exactly_the_remaining_augmented_batches(rank, done):
    """Ten batches per rank; the checkpoint had trained ``done`` of them."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (83, 3, 8, 8), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (83,), generator=generator)
    whole = loader(images, labels, rank=rank)
    uninterrupted = [(x.clone(), y.clone()) for x, y in whole]
    assert len(uninterrupted) == len(whole) == 10

    resumed = loader(images, labels, rank=rank, trainer=resumed_trainer(epoch=2, batches=done, batch_size=BATCH))
    rest = list(resumed)
    assert resumed.sampler.start_index == done * BATCH
    assert len(rest) == 10 - done and all(len(y) == BATCH for _, y in rest)
    for (x, y), (x_ref, y_ref) in zip(rest, uninterrupted[done:], strict=True):
        assert torch.equal(y, y_ref) and torch.equal(x, x_ref)  # augmentation included
    # len() is the epoch's, as the DataLoader path reports it: Lightning counts a resumed
    # epoch's batches from the restored position up to it.
    dataloader = DataLoader(UInt8ImageDataset(images, labels, lambda image: image), batch_size=BATCH,
                            sampler=resumed.sampler, drop_last=True)
    assert len(resumed) == len(dataloader) == 10
    assert [y.tolist() for _, y in dataloader] == [y.tolist() for _, y in rest]
