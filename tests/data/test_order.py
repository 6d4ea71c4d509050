"""The training order (resnet_lab/data/order.py): the balanced sampler draws the classes
equally often, shards like DistributedSampler and resumes where the restored loop continues."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from resnet_lab.data import SyntheticDataModule
from resnet_lab.data.order import BalancedDistributedSampler, ResumableDistributedSampler
from tests.helpers import resumed_trainer

LABELS = torch.tensor([0] * 90 + [1] * 10)  # 9:1 imbalance
WEIGHTS = (1.0 / torch.bincount(LABELS).double())[LABELS]


def sampler(rank=0, replicas=1, *, epoch=0, trainer=None, seed=3) -> BalancedDistributedSampler:
    s = BalancedDistributedSampler(range(len(LABELS)), weights=WEIGHTS, num_replicas=replicas, rank=rank,
                                   shuffle=True, seed=seed, drop_last=True, trainer=trainer)
    s.set_epoch(epoch)
    return s


def test_the_classes_are_drawn_equally_often():
    drawn = torch.cat([LABELS[list(sampler(epoch=epoch))] for epoch in range(20)])
    assert len(drawn) == 20 * len(LABELS)  # an epoch keeps the data set's length
    share = float((drawn == 1).double().mean())
    # Binomial(2000, 0.5): standard deviation 0.011; unweighted it would be 0.1.
    assert abs(share - 0.5) < 0.05


def test_each_epoch_is_a_function_of_seed_and_epoch():
    assert list(sampler(epoch=1)) == list(sampler(epoch=1))
    assert list(sampler(epoch=1)) != list(sampler(epoch=2))
    assert list(sampler(epoch=1)) != list(sampler(epoch=1, seed=4))


def test_ranks_share_one_draw_as_distributed_sampler_shards_a_permutation():
    ranks = [list(sampler(rank, 3, epoch=2)) for rank in range(3)]
    assert [len(r) for r in ranks] == [33, 33, 33]  # 100 over 3 ranks: the remainder dropped
    interleaved = [index for draws in zip(*ranks) for index in draws]
    generator = torch.Generator().manual_seed(3 + 2)
    assert interleaved == torch.multinomial(WEIGHTS, 99, replacement=True, generator=generator).tolist()


def test_a_resumed_epoch_continues_the_same_draw():
    whole = list(sampler(1, 2, epoch=4))
    resumed = sampler(1, 2, trainer=resumed_trainer(epoch=4, batches=3, batch_size=5))
    assert list(resumed) == whole[15:] and resumed.start_index == 15 and resumed.epoch == 4


def test_a_data_module_option_for_every_data_set():
    data = SyntheticDataModule(image_size=8, num_classes=3, train_size=60, batch_size=6, balanced_sampler=True)
    data.setup("fit")
    loader = data.train_dataloader()
    assert isinstance(loader.sampler, BalancedDistributedSampler)
    counts = np.bincount(data.train_labels().numpy(), minlength=3)
    assert data.class_counts() == counts.tolist()
    assert torch.allclose(loader.sampler.weights, torch.tensor(1.0 / counts)[data.train_labels()].double())
    assert len(loader) == 10 and sum(len(labels) for _, labels in loader) == 60


@pytest.mark.parametrize(
    ("state", "epoch", "skipped"),
    [
        (dict(resuming=False, restarting=False, epoch=3, batches=2, last=False), 0, 0),  # fresh run
        (dict(resuming=True, restarting=True, epoch=3, batches=2, last=False), 3, 8),  # mid-epoch
        (dict(resuming=True, restarting=True, epoch=3, batches=5, last=True), 4, 0),  # epoch trained
        (dict(resuming=True, restarting=False, epoch=4, batches=5, last=True), 4, 0),  # epoch ended
    ],
    ids=["not resuming", "mid-epoch", "after the last batch", "after the epoch end"],
)
def test_the_sampler_continues_where_the_restored_loop_continues(state, epoch, skipped):
    dataset = list(range(40))
    sampler = ResumableDistributedSampler(dataset, num_replicas=2, rank=1, shuffle=True, seed=7,
                                          drop_last=True, trainer=resumed_trainer(**state, batch_size=4))
    order = list(sampler)
    plain = torch.utils.data.DistributedSampler(dataset, num_replicas=2, rank=1, shuffle=True, seed=7, drop_last=True)
    plain.set_epoch(epoch)
    assert sampler.epoch == epoch and sampler.start_index == skipped
    assert order == list(plain)[skipped:]
