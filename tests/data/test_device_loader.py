"""The device-resident loader continues a resumed epoch exactly where the sampler says."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from resnet_lab.data.augment import Normalize, SmallImageAugment
from resnet_lab.data.cifar import CIFAR_RELEASES
from resnet_lab.data.device_loader import DeviceResidentLoader
from resnet_lab.data.in_memory import UInt8ImageDataset
from resnet_lab.data.order import ResumableDistributedSampler
from resnet_lab.train import train
from tests.helpers import compose_config, resumed_trainer
from tests.helpers.fakes import write_cifar

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


@pytest.mark.slow
def test_training_resumed_mid_epoch_on_the_device_path_ends_bit_identical(tmp_path, monkeypatch):
    """The real train(cfg) on fake CIFAR files, device-resident on the CPU with random erasing:
    resumed from a checkpoint taken mid-epoch, it ends with the uninterrupted run's weights."""
    data_root = tmp_path / "data" / "cifar10"
    monkeypatch.setitem(CIFAR_RELEASES, "cifar10", write_cifar(data_root, train_per_file=16, test_size=16, archive=False))
    common = [
        "data=cifar10", "data.download=false", "data.val_size=16", "data.batch_size=16", "data.eval_batch_size=16",
        "data.device_resident=true", "data.random_erasing=0.5", "model=resnet20", "trainer.max_epochs=2",
        "trainer.deterministic=true", "logger=none", "test=false", "+callbacks.final._target_=tests.helpers.FinalState",
    ]
    every_step = ["+callbacks.steps._target_=lightning.pytorch.callbacks.ModelCheckpoint",
                  "+callbacks.steps.dirpath=${paths.output_dir}/steps", "+callbacks.steps.save_top_k=-1",
                  "+callbacks.steps.every_n_train_steps=1", "+callbacks.steps.filename=s\\{step\\}",
                  "+callbacks.steps.auto_insert_metric_name=false"]

    def run(name: str, *overrides: str) -> dict:
        directory = tmp_path / name
        train(compose_config([*common, f"+callbacks.final.path={directory}/final.pt", *overrides], run_dir=directory))
        return torch.load(directory / "final.pt", weights_only=True)["weights"]

    reference = run("reference", *every_step)  # 64 training images: 4 batches an epoch
    for step in (3, 6):  # batch 3 of epoch 0, batch 2 of epoch 1
        resumed = run(f"resumed_{step}", f"ckpt_path={tmp_path / 'reference' / 'steps' / f's{step}.ckpt'}")
        for key, value in reference.items():
            assert torch.equal(resumed[key], value), (step, key)
