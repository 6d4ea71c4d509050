"""Sharding under DDP: two CPU processes joined by torch.distributed (gloo), no Lightning trainer.

The data module takes the world size and rank from the initialized process group. Each rank
must get a disjoint shard of the training set, reshuffled every epoch, and evaluation must
cover the test set exactly once across ranks (no padding duplicates), on both loader paths.
"""

from __future__ import annotations

import hashlib
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from lightning.fabric.utilities.data import _set_sampler_epoch

from resnet_lab.data import CifarDataModule
from resnet_lab.data.cifar import CIFAR_RELEASES
from tests.helpers.fakes import write_cifar

WORLD_SIZE = 2
TRAIN, VAL, TEST = 5 * 21, 10, 23  # odd sizes: shards cannot split them evenly


def _image_ids(images: torch.Tensor, module: CifarDataModule) -> list[str]:
    """Identify normalized evaluation images by the bytes of the uint8 images they came from."""
    mean = torch.tensor(module.normalize.mean).view(1, 3, 1, 1)
    std = torch.tensor(module.normalize.std).view(1, 3, 1, 1)
    pixels = ((images * std + mean) * 255).round().to(torch.uint8)
    return [hashlib.md5(image.numpy().tobytes()).hexdigest() for image in pixels]


def _rank_main(rank: int, port: int, root: str, release, results) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE)
    try:
        CIFAR_RELEASES["cifar10"] = release
        report = {}
        for device_resident in (True, False):
            data = CifarDataModule(
                root=root, download=False, val_size=VAL, batch_size=8, eval_batch_size=6,
                device_resident=device_resident,
            )
            data.setup()
            assert (data.world_size, data.rank) == (WORLD_SIZE, rank)
            labels = data.arrays["train"][1]
            shards = []
            for epoch in (0, 1):
                loader = data.train_dataloader()
                _set_sampler_epoch(loader, epoch)
                indices = list(loader.sampler)
                seen = torch.cat([batch_labels for _, batch_labels in loader])
                batch_sizes = {len(batch_labels) for _, batch_labels in loader}
                assert batch_sizes == {4}, batch_sizes  # global 8 over 2 ranks
                assert torch.equal(seen, labels[indices[: len(seen)]])  # the loader follows its shard
                shards.append(indices)
            test_ids = [i for images, _ in data.test_dataloader() for i in _image_ids(images, data)]
            report[device_resident] = {"shards": shards, "test": test_ids, "all_test": _image_ids(
                data.normalize(data.arrays["test"][0]), data)}
        gathered = [None] * WORLD_SIZE
        dist.all_gather_object(gathered, report)
        if rank == 0:
            results.put(gathered)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_ranks_get_disjoint_shards_reshuffled_each_epoch_and_evaluate_each_image_once(tmp_path):
    release = write_cifar(tmp_path, train_per_file=(TRAIN + VAL) // 5, test_size=TEST, archive=False)
    context = mp.get_context("spawn")
    results = context.SimpleQueue()
    mp.start_processes(
        _rank_main, args=(_free_port(), str(tmp_path), release, results), nprocs=WORLD_SIZE, start_method="spawn"
    )
    gathered = results.get()
    for device_resident in (True, False):
        reports = [rank_report[device_resident] for rank_report in gathered]
        for epoch in (0, 1):
            shards = [set(report["shards"][epoch]) for report in reports]
            assert not shards[0] & shards[1]
            # DistributedSampler(drop_last=True) trims the odd sample out: 105 -> 2 x 52.
            assert len(shards[0]) == len(shards[1]) == TRAIN // WORLD_SIZE
            assert shards[0] | shards[1] <= set(range(TRAIN))
        for report in reports:
            assert report["shards"][0] != report["shards"][1]  # reshuffled
        # Evaluation: every test image exactly once over both ranks, no padding duplicates.
        test_ids = reports[0]["test"] + reports[1]["test"]
        assert sorted(test_ids) == sorted(reports[0]["all_test"]) and len(test_ids) == TEST
    # Both paths shard the same way.
    assert [r[True]["shards"] for r in gathered] == [r[False]["shards"] for r in gathered]
