"""WebDataset shards: the writer command, reading by offset, the shard-local order, the data module."""

from __future__ import annotations

import hashlib
import json
import socket
import tarfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from lightning.fabric.utilities.data import _set_sampler_epoch

from resnet_lab.data import ImageNetSubsetDataModule
from resnet_lab.data.fast_images import EpochSeededSampler
from resnet_lab.data.shard_writer import main as write_command
from resnet_lab.data.shard_writer import write_shards
from resnet_lab.data.shards import ShardOrderSampler, ShardSource
from resnet_lab.errors import ConfigError, DataError
from resnet_lab.train import train
from tests.helpers import compose_config, resumed_trainer, run_cli, run_dirs
from tests.helpers.fakes import write_image_tree

CLASSES = ("n01440764", "n02102040", "n02979186")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_image_tree(tmp_path_factory.mktemp("tree"), CLASSES, train_per_class=9, val_per_class=4)


@pytest.fixture(scope="module")
def shards(tree, tmp_path_factory):
    output = tmp_path_factory.mktemp("shards")
    write_shards(tree, output, shard_size=5, seed=1)
    return output


def _digest(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _tree_samples(tree, split) -> set[tuple[str, int]]:
    return {(_digest(path.read_bytes()), label) for label, wnid in enumerate(CLASSES) for path in (tree / split / wnid).iterdir()}


def test_the_writer_copies_every_image_byte_for_byte_into_webdataset_shards(tree, shards, capsys):
    train = json.loads((shards / "train.json").read_text())
    assert train["classes"] == list(CLASSES) and train["wids_version"] == 1
    assert [entry["nsamples"] for entry in train["shardlist"]] == [5, 5, 5, 5, 5, 2]
    with tarfile.open(shards / train["shardlist"][0]["url"]) as tar:
        names = tar.getnames()
    assert names[0].endswith(".jpg") and names[1] == names[0][: -len("jpg")] + "cls"  # WebDataset's grouping
    for split in ("train", "val"):
        source = ShardSource(shards, split)
        read = [source.read(i) for i in range(len(source))]
        assert {(_digest(data), label) for data, label in read} == _tree_samples(tree, split)
        assert len(read) == len({_digest(data) for data, _ in read})
    labels = [source.read(i)[1] for i in range(5)]
    assert len(set(labels)) > 1  # shuffled before sharding: a shard mixes classes


def test_the_writer_is_deterministic_and_keeps_what_is_there(tree, shards, tmp_path, capsys):
    again = tmp_path / "again"
    assert write_command(["--source", str(tree), "--output", str(again), "--shard-size", "5", "--seed", "1"]) == 0
    assert "train: 27 samples of 3 classes in 6 shards" in capsys.readouterr().out
    for path in shards.iterdir():
        assert (again / path.name).read_bytes() == path.read_bytes(), path.name
    before = (again / "train-000000.tar").read_bytes()
    assert write_command(["--source", str(tree), "--output", str(again), "--seed", "2"]) == 2
    assert "already holds" in capsys.readouterr().err and (again / "train-000000.tar").read_bytes() == before
    assert write_command(["--source", str(tree), "--output", str(again), "--seed", "2", "--overwrite"]) == 0


def test_a_folder_of_class_folders_becomes_one_train_split(tree, tmp_path):
    indexes = write_shards(tree / "val", tmp_path / "out", shard_size=100)
    assert list(indexes) == ["train"] and indexes["train"]["shardlist"][0]["nsamples"] == 12


def test_bad_sources_are_refused_before_anything_is_written(tree, tmp_path):
    (tmp_path / "val" / CLASSES[0]).mkdir(parents=True)
    with pytest.raises(DataError, match="no train/ folder"):
        write_shards(tmp_path, tmp_path / "out")
    broken = write_image_tree(tmp_path / "broken", CLASSES[:2], train_per_class=2, val_per_class=1)
    (broken / "val" / CLASSES[1] / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="notes.txt is not an image file"):
        write_shards(broken, tmp_path / "out2")
    assert not (tmp_path / "out2").exists()
    with pytest.raises(ConfigError, match="--shard-size"):
        write_shards(tree, tmp_path / "out3", shard_size=0)


def test_damaged_shards_are_named(shards, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in shards.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    (copy / "val-000000.tar").unlink()
    with pytest.raises(DataError, match=r"val-000000.tar, listed in .*val.json, does not exist"):
        ShardSource(copy, "val")
    with pytest.raises(DataError, match=r"test.json does not exist.*python -m resnet_lab.data.shard_writer"):
        ShardSource(copy, "test")
    index = json.loads((copy / "train.json").read_text())
    index["shardlist"][0]["nsamples"] = 6
    (copy / "train.json").write_text(json.dumps(index))
    with pytest.raises(DataError, match="holds 5 samples but its shard index says 6"):
        ShardSource(copy, "train")
    (copy / "train-000000.tar").write_bytes(b"\0" * 100)
    with pytest.raises(DataError, match="not a readable WebDataset shard"):
        ShardSource(copy, "train")


def _dataset(shards):
    data = ImageNetSubsetDataModule(root=shards, format="shards", subset=None, num_classes=3, image_size=16, batch_size=4)
    data.setup()
    return data


def test_the_order_is_shard_local_disjoint_across_ranks_and_new_each_epoch(shards):
    dataset = _dataset(shards).train_set
    orders = {}
    for epoch in (0, 1):
        for rank in (0, 1):
            sampler = ShardOrderSampler(dataset, window=5, num_replicas=2, rank=rank, shuffle=True, seed=0, drop_last=True)
            sampler.set_epoch(epoch)
            orders[epoch, rank] = [index for index, tagged_epoch in sampler if tagged_epoch == epoch]
            assert len(orders[epoch, rank]) == len(sampler) == 27 // 2
    for epoch in (0, 1):
        assert not set(orders[epoch, 0]) & set(orders[epoch, 1])
    assert orders[0, 0] != orders[1, 0]
    # A window of 5 samples comes from one shard of 5: each run of 5 touches at most 2 shards.
    source = dataset.source
    for start in range(0, 13 - 5, 5):
        assert len({source.locate(i)[0] for i in orders[0, 0][start : start + 5]}) <= 2


@pytest.mark.parametrize("kind", ["files", "shards"])
def test_a_resumed_epoch_continues_with_the_same_batches_whatever_the_workers(kind, tree, shards):
    """Batches 2.. of epoch 1 after a resume at batch 2 equal the uninterrupted epoch's, pixel for
    pixel, with 0 workers before and 2 after (augmentation is seeded per sample)."""
    common = {"subset": None, "num_classes": 3, "image_size": 16, "batch_size": 4, "random_erasing": 0.5}
    data = ImageNetSubsetDataModule(root=shards if kind == "shards" else tree, format=kind, **common)
    data.setup()
    sampler_type = ShardOrderSampler if kind == "shards" else EpochSeededSampler
    extra = {"window": 5} if kind == "shards" else {}

    def batches(trainer, workers):
        sampler = sampler_type(data.train_set, num_replicas=1, rank=0, shuffle=True, seed=0, drop_last=True, trainer=trainer, **extra)
        sampler.set_epoch(1)
        loader = torch.utils.data.DataLoader(data.train_set, batch_size=4, sampler=sampler, drop_last=True, num_workers=workers)
        return list(loader)

    whole = batches(None, 0)
    resumed = batches(resumed_trainer(epoch=1, batches=2, batch_size=4), 2)
    assert len(resumed) == len(whole) - 2
    for ours, reference in zip(resumed, whole[2:]):
        assert all(torch.equal(a, b) for a, b in zip(ours, reference))


def test_the_data_module_trains_on_shards_with_their_classes(shards):
    data = _dataset(shards)
    assert data.classes[0] == "tench" and len(data.train_set) == 27 and len(data.val_set) == 12
    batch = next(iter(data.train_dataloader()))
    images, labels = data.on_after_batch_transfer(batch, 0)
    assert images.shape == (4, 3, 16, 16) and images.dtype == torch.float32 and labels.max() < 3
    with pytest.raises(ConfigError, match="hold 3 classes but data.num_classes=2"):
        ImageNetSubsetDataModule(root=shards, format="shards", subset=None, num_classes=2).setup()
    with pytest.raises(DataError, match="not the 10 asked for"):
        ImageNetSubsetDataModule(root=shards, format="shards", subset="imagenette", num_classes=10).setup()
    with pytest.raises(ConfigError, match="data.val_size=0"):
        ImageNetSubsetDataModule(root=shards, format="shards", subset=None, num_classes=3, val_size=5)


# --------------------------------------------------------------------- two DDP processes


def _rank_main(rank: int, port: int, root: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        data = ImageNetSubsetDataModule(
            root=root, format="shards", subset=None, num_classes=3, image_size=16, batch_size=4,
            eval_batch_size=6, num_workers=1, shuffle_window=5,
        )
        data.setup()
        report = {"train": [], "val": []}
        for epoch in (0, 1):
            loader = data.train_dataloader()
            _set_sampler_epoch(loader, epoch)
            indices = [index for index, _ in loader.sampler]
            labels = torch.cat([batch[1] for batch in loader])
            expected = [data.train_set.source.read(i)[1] for i in indices[: len(labels)]]
            assert labels.tolist() == expected  # the loader follows its rank's share, in order
            assert len(labels) == (27 // 2) // 2 * 2  # whole per-device batches of 2
            report["train"].append(indices)
        report["val"] = list(data.val_dataloader().sampler)
        results[rank] = report
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_read_disjoint_shares_of_the_shards(shards):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(_rank_main, args=(port, str(shards), results), nprocs=2)
    for epoch in (0, 1):
        first, second = results[0]["train"][epoch], results[1]["train"][epoch]
        assert len(first) == len(second) == 13 and not set(first) & set(second)
    assert results[0]["train"][0] != results[0]["train"][1]
    assert sorted(results[0]["val"] + results[1]["val"]) == list(range(12))  # each val sample once


@pytest.mark.slow
def test_training_on_shards_with_two_ddp_processes(shards, tmp_path):
    """python -m resnet_lab trainer=ddp_cpu (2 processes) over shards on disk: exact epochs of
    27 // 2 = 13 samples per rank, in 6 steps of 2 per device; the run finishes."""
    result = run_cli(
        [
            "trainer=ddp_cpu", "data=imagenet_subset", f"data.root={shards}", "data.format=shards",
            "data.subset=null", "data.num_classes=3", "data.image_size=16", "data.batch_size=4",
            "data.eval_batch_size=4", "data.num_workers=1", "model=resnet20", "trainer.max_epochs=2",
        ],
        tmp_path, timeout=600, env={"OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    (run,) = run_dirs(tmp_path)
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "finished" and record["global_step"] == 2 * 6


def test_class_counts_of_shards_read_their_labels(shards):
    data = _dataset(shards)
    assert data.class_counts() == [9, 9, 9]


# --------------------------------------------------------------------- resuming through Lightning


@pytest.mark.slow
def test_a_run_on_shards_resumed_mid_epoch_ends_bit_identical(shards, tmp_path):
    """Train 2 epochs on shards with per-sample augmentation drawn in a worker process
    (random crops, flips, random erasing) and MixUp; resume from the checkpoint after step 2
    of epoch 1 (of 6): the final weights equal the uninterrupted run's."""
    common = [
        "data=imagenet_subset", f"data.root={shards}", "data.format=shards", "data.subset=null",
        "data.num_classes=3", "data.image_size=16", "data.batch_size=4", "data.eval_batch_size=4",
        "data.num_workers=1", "data.random_erasing=0.5", "data.mixup_alpha=0.4", "data.shuffle_window=5",
        "model=resnet20", "trainer.max_epochs=2", "trainer.deterministic=true", "logger=none", "test=false",
        "callbacks.last_checkpoint.every_n_train_steps=1", "+callbacks.final._target_=tests.helpers.FinalState",
    ]

    def run(name: str, *extra: str) -> dict:
        directory = tmp_path / name
        weights = directory / "final.pt"
        train(compose_config([*common, f"+callbacks.final.path={weights}", *extra], run_dir=directory))
        return torch.load(weights, weights_only=True)["weights"]

    keep = [
        "+callbacks.steps._target_=lightning.pytorch.callbacks.ModelCheckpoint",
        "+callbacks.steps.dirpath=${paths.output_dir}/steps", "+callbacks.steps.save_top_k=-1",
        "+callbacks.steps.every_n_train_steps=1", "+callbacks.steps.filename=s\\{step\\}",
        "+callbacks.steps.auto_insert_metric_name=false",
    ]
    reference = run("reference", *keep)
    resumed = run("resumed", f"ckpt_path={tmp_path / 'reference' / 'steps' / 's8.ckpt'}")
    for key, value in reference.items():
        assert torch.equal(resumed[key], value), key


def test_training_loaders_draw_their_first_indices_at_the_first_batch(shards):
    """Lightning creates the training iterator before it restores a resumed run's position
    (for estimated_stepping_batches); a loader with workers must not draw indices then."""
    data = _dataset(shards)
    data.num_workers = 1
    loader = data.train_dataloader()
    drawn = []
    sampler_iter = type(loader.sampler).__iter__
    type(loader.sampler).__iter__ = lambda self: (drawn.append(True), sampler_iter(self))[1]
    try:
        state = torch.get_rng_state()
        iterator = iter(loader)
        assert not drawn  # nothing drawn, no worker started
        next(iterator)
        assert drawn and torch.equal(torch.get_rng_state(), state)  # the workers' seed is the loader's own
    finally:
        type(loader.sampler).__iter__ = sampler_iter
