"""resnet_lab.load and ImageClassifier.load_from_checkpoint: a checkpoint classifies new images
on its own (architecture, classes and preprocessing travel in it), with the run's exact logits."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

import resnet_lab
from resnet_lab.data.image_files import decode_image_file
from resnet_lab.errors import CheckpointError
from resnet_lab.evaluate import evaluate_network
from resnet_lab.module import ImageClassifier
from resnet_lab.run_dir import read_record
from tests.helpers import train_photo_run


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return train_photo_run(tmp_path_factory.mktemp("photos"))


def _best(run: Path) -> Path:
    return run / "checkpoints" / "best.ckpt"


def _test_set(run: Path):
    """The run's own data module, set up as its test was."""
    datamodule = instantiate(OmegaConf.load(run / ".hydra" / "config.yaml").data)
    datamodule.setup("test")
    return datamodule


def test_load_gives_network_classes_and_preprocessing_of_the_run(run):
    classifier = resnet_lab.load(run)
    assert classifier.checkpoint == _best(run)
    assert classifier.classes == ["china", "flower", "noise"]
    assert not classifier.net.training
    p = classifier.preprocessing
    assert (p.in_chans, p.crop_size, p.resize_size) == (3, 16, 18)  # 16 / 0.875, as evaluation resizes
    assert classifier.meta["categories"] == classifier.classes


def test_load_and_load_from_checkpoint_give_the_logits_of_the_best_checkpoint(run):
    """The network of resnet_lab.load, the one Lightning rebuilds from the checkpoint alone, and
    the best checkpoint's weights in the run's configured model: one set of logits."""
    checkpoint = torch.load(_best(run), weights_only=True)
    reference = instantiate(OmegaConf.load(run / ".hydra" / "config.yaml").model)
    reference.load_state_dict({k[4:]: v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")})
    reference.eval()
    images = torch.randn(5, 3, 16, 16)
    module = ImageClassifier.load_from_checkpoint(_best(run))
    module.eval()
    with torch.inference_mode():
        expected = reference(images)
        assert torch.equal(resnet_lab.load(run).net(images), expected)
        assert torch.equal(module(images), expected)
    assert module.hparams.classes == ["china", "flower", "noise"]


def test_the_loaded_classifier_reproduces_the_logged_test_accuracy(run):
    """.net over the test split, as the data module feeds it: the accuracy the run logged."""
    datamodule = _test_set(run)
    classifier = resnet_lab.load(run)
    results = evaluate_network(classifier.net, datamodule.test_dataloader(), datamodule, 3, torch.device("cpu"), None)
    assert results["acc_top1"] == pytest.approx(read_record(run)["metrics"]["test/acc_top1"], abs=1e-6)


def test_transform_is_the_data_modules_evaluation_transform(run):
    """.transform on a decoded file, or on the same file opened with Pillow, is what the data
    module's test set gives for it."""
    from PIL import Image

    datamodule = _test_set(run)
    classifier = resnet_lab.load(run)
    test_set = datamodule.test_set
    for index in range(len(test_set)):
        path = test_set.paths[index].decode()
        image, label = test_set[index]
        # The fast path's workers hand over uint8 crops; the data module normalizes them after
        # the transfer to the device. Both steps together are the evaluation transform.
        (expected,), _ = datamodule.on_after_batch_transfer((image[None], torch.tensor([label])), 0)
        assert torch.equal(classifier.transform(decode_image_file(path)), expected), path
        if path.endswith(".png"):  # lossless: Pillow's pixels are torchvision's
            with Image.open(path) as image:
                assert torch.equal(classifier.transform(image), expected), path


def test_ema_weights_load_and_differ_from_the_trained_ones(run):
    checkpoint = torch.load(_best(run), weights_only=True)
    ema = resnet_lab.load(run, ema=True)
    assert ema.ema
    ema_state = {k: v for k, v in checkpoint["ema_state_dict"].items() if k.startswith("net.")}
    assert all(torch.equal(ema.net.state_dict()[k[4:]], v) for k, v in ema_state.items())
    images = torch.randn(3, 3, 16, 16)
    with torch.inference_mode():
        assert not torch.equal(ema.net(images), resnet_lab.load(run).net(images))


def test_a_checkpoint_copied_out_of_its_run_still_loads(run, tmp_path):
    alone = tmp_path / "model.ckpt"
    shutil.copy(_best(run), alone)
    classifier = resnet_lab.load(alone)
    assert classifier.classes == ["china", "flower", "noise"]
    assert classifier.preprocessing == resnet_lab.load(run).preprocessing


def _without_metadata(run: Path, destination: Path) -> Path:
    """The best checkpoint as resnet_lab wrote it before checkpoints carried their metadata."""
    checkpoint = torch.load(_best(run), weights_only=True)
    for key in ("architecture", "classes", "preprocessing"):
        checkpoint["hyper_parameters"].pop(key)
    torch.save(checkpoint, destination)
    return destination


def test_an_older_checkpoint_is_completed_from_its_run_directory(run):
    old = _without_metadata(run, run / "checkpoints" / "older.ckpt")
    try:
        classifier = resnet_lab.load(old)
        new = resnet_lab.load(run)
        assert classifier.classes == new.classes and classifier.preprocessing == new.preprocessing
        images = torch.randn(2, 3, 16, 16)
        with torch.inference_mode():
            assert torch.equal(classifier.net(images), new.net(images))
        # Lightning's loader cannot rebuild it alone; given the network, it loads.
        with pytest.raises(CheckpointError, match="predates saved architectures"):
            ImageClassifier.load_from_checkpoint(old)
        net = instantiate(OmegaConf.load(run / ".hydra" / "config.yaml").model)
        assert torch.equal(ImageClassifier.load_from_checkpoint(old, net=net).eval()(images), new.net(images))
    finally:
        old.unlink()


def test_an_older_checkpoint_outside_its_run_says_what_it_lacks(run, tmp_path):
    old = _without_metadata(run, tmp_path / "older.ckpt")
    with pytest.raises(CheckpointError, match="does not hold its architecture, classes, preprocessing.*run directory"):
        resnet_lab.load(old)


def test_bad_paths_are_checkpoint_errors_with_a_sentence(run, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        resnet_lab.load(tmp_path / "missing.ckpt")
    with pytest.raises(CheckpointError, match="is a directory but not a run directory"):
        resnet_lab.load(tmp_path)
    (tmp_path / "notes.ckpt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="is not a PyTorch checkpoint"):
        resnet_lab.load(tmp_path / "notes.ckpt")
    weights = tmp_path / "weights.pth"
    torch.save(resnet_lab.load(run).net.state_dict(), weights)
    with pytest.raises(CheckpointError, match="holds network weights only.*model.weights"):
        resnet_lab.load(weights)


def test_a_run_without_a_best_checkpoint_points_at_its_last(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "checkpoints" / "best.ckpt").unlink()
    with pytest.raises(CheckpointError, match="has no best checkpoint.*last.ckpt"):
        resnet_lab.load(copy)


def test_ema_of_a_checkpoint_without_one_is_refused(run, tmp_path):
    checkpoint = torch.load(_best(run), weights_only=True)
    del checkpoint["ema_state_dict"]
    torch.save(checkpoint, tmp_path / "plain.ckpt")
    with pytest.raises(CheckpointError, match="no EMA weights.*callbacks=ema"):
        resnet_lab.load(tmp_path / "plain.ckpt", ema=True)
