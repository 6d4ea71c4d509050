"""Augmentation: the device-resident path against torchvision's, determinism, training-only,
MixUp / CutMix targets, and what Lightning does with the device-resident loader."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from lightning.fabric.utilities.data import _set_sampler_epoch
from scipy import stats
from torchvision.transforms import v2

from resnet_lab.data import CifarDataModule, SyntheticDataModule
from resnet_lab.data.augment import Normalize, SmallImageAugment, cutout, random_erasing
from resnet_lab.data.cifar import CIFAR_RELEASES
from resnet_lab.data.device_loader import DeviceResidentLoader
from resnet_lab.data.mixing import BatchMixer
from resnet_lab.errors import ConfigError
from tests.helpers.fakes import write_cifar

SAMPLES = 3000
IDENTITY = Normalize((0.0, 0.0, 0.0), (1 / 255, 1 / 255, 1 / 255))  # float output = uint8 input


def coordinate_images(n: int) -> torch.Tensor:
    """uint8 images whose pixels say where they are: channel 0 = row + 1, channel 1 = col + 1."""
    rows = torch.arange(1, 33, dtype=torch.uint8).view(32, 1).expand(32, 32)
    cols = torch.arange(1, 33, dtype=torch.uint8).view(1, 32).expand(32, 32)
    image = torch.stack([rows, cols, torch.zeros_like(rows)])
    return image.expand(n, 3, 32, 32).contiguous()


def crop_windows(augmented: torch.Tensor) -> np.ndarray:
    """(row offset, column offset, flipped) of each augmented coordinate image, read at its centre
    (offsets of at most 4 pixels never move padding there)."""
    row_value = augmented[:, 0, 16, 16]
    col_value, left_value = augmented[:, 1, 16, 16], augmented[:, 1, 16, 15]
    flipped = col_value < left_value
    row_offset = row_value - 1 - 16
    col_offset = torch.where(flipped, col_value - 1 - 15, col_value - 1 - 16)
    return torch.stack([row_offset, col_offset, flipped.float()], dim=1).round().long().numpy()


def window_counts(windows: np.ndarray) -> np.ndarray:
    index = (windows[:, 0] + 4) * 18 + (windows[:, 1] + 4) * 2 + windows[:, 2]
    return np.bincount(index, minlength=9 * 9 * 2)


def test_device_crop_flip_matches_torchvision_in_distribution():
    augment = SmallImageAugment(pad=4, flip=True)
    images = coordinate_images(SAMPLES)
    device = augment.apply_batch(images, IDENTITY, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    reference_transform = augment.sample_transform(32, IDENTITY)
    reference = torch.stack([reference_transform(image) for image in images[:SAMPLES]])
    device_counts, reference_counts = window_counts(crop_windows(device)), window_counts(crop_windows(reference))
    # Every one of the 9 x 9 offsets x 2 flips occurs, equally often on both paths ...
    assert device_counts.min() > 0 and reference_counts.min() > 0
    assert stats.chisquare(device_counts).pvalue > 1e-3
    assert stats.chisquare(reference_counts).pvalue > 1e-3
    assert stats.chi2_contingency(np.stack([device_counts, reference_counts])).pvalue > 1e-3
    # ... and the padding is zeros: a window 4 pixels down shows rows 4..31, then 4 zero rows.
    for batch in (device, reference):
        down = np.flatnonzero(crop_windows(batch)[:, 0] == 4)[0]
        assert batch[down, 0, 0, 16] == 5 and batch[down, 0, 27, 16] == 32
        assert (batch[down, :, 28:] == 0).all()
    # Per-pixel means agree between the paths within 5 standard errors.
    standard_error = ((device.var(0) + reference.var(0)) / SAMPLES).sqrt()
    assert ((device.mean(0) - reference.mean(0)).abs() <= 5 * standard_error + 1e-6).all()


def test_device_random_erasing_matches_torchvision_in_distribution():
    ones = torch.ones(SAMPLES, 3, 32, 32)
    device = random_erasing(ones, 0.5, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(1)
    reference_transform = v2.RandomErasing(p=0.5)
    reference = torch.stack([reference_transform(image) for image in ones])

    def erased(batch):
        mask = batch[:, 0] == 0
        area = mask.flatten(1).float().mean(1)
        rows = mask.any(2).float().argmax(1)  # first erased row
        return area, rows, mask

    device_area, device_rows, device_mask = erased(device)
    reference_area, reference_rows, reference_mask = erased(reference)
    assert abs((device_area > 0).float().mean() - 0.5) < 0.03
    assert abs((reference_area > 0).float().mean() - 0.5) < 0.03
    assert stats.ks_2samp(device_area[device_area > 0], reference_area[reference_area > 0]).pvalue > 1e-3
    assert stats.ks_2samp(device_rows[device_area > 0], reference_rows[reference_area > 0]).pvalue > 1e-3
    # Where in the image erasing happens: the same map on both paths.
    torch.testing.assert_close(device_mask.float().mean(0), reference_mask.float().mean(0), atol=0.04, rtol=0)
    # Every erased region is one box (all channels).
    assert torch.equal(device[:, 0] == 0, device[:, 2] == 0)


def test_cutout_squares():
    images = cutout(torch.ones(2000, 1, 32, 32), 16, generator=torch.Generator().manual_seed(0))
    zeros = (images == 0).flatten(1).sum(1)
    assert zeros.max() == 256 and zeros.min() >= 64  # clipped at a corner: at least 8 x 8
    assert (zeros == 256).float().mean() > 0.15  # centre in [8, 24) on both axes: 1/4


def cifar_module(tmp_path, monkeypatch, **options) -> CifarDataModule:
    release = write_cifar(tmp_path, train_per_file=40, test_size=48, archive=False)
    monkeypatch.setitem(CIFAR_RELEASES, "cifar10", release)
    options = {"val_size": 24, "batch_size": 16, "eval_batch_size": 16, "download": False, "device_resident": True, **options}
    data = CifarDataModule(root=tmp_path, **options)
    data.setup()
    return data


def epoch(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(images.clone(), labels.clone()) for images, labels in loader]


def test_device_loader_is_a_function_of_seed_epoch_and_batch(tmp_path, monkeypatch):
    data = cifar_module(tmp_path, monkeypatch)
    first, again = epoch(data.train_dataloader()), epoch(data.train_dataloader())
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    # Lightning's own helper finds the sampler and sets the epoch: a new order.
    loader = data.train_dataloader()
    _set_sampler_epoch(loader, 1)
    assert loader.sampler.epoch == 1
    assert not torch.equal(torch.cat([b[1] for b in epoch(loader)]), torch.cat([b[1] for b in first]))
    other_seed = cifar_module(tmp_path / "other", monkeypatch, seed=1)
    assert not torch.equal(torch.cat([b[1] for b in epoch(other_seed.train_dataloader())]), torch.cat([b[1] for b in first]))


def test_both_paths_draw_the_same_samples_in_the_same_order(tmp_path, monkeypatch):
    device = cifar_module(tmp_path, monkeypatch, device_resident=True)
    workers = cifar_module(tmp_path / "again", monkeypatch, device_resident=False)
    for epoch_number in (0, 1):
        loaders = device.train_dataloader(), workers.train_dataloader()
        for loader in loaders:
            _set_sampler_epoch(loader, epoch_number)
        assert isinstance(loaders[0], DeviceResidentLoader) and len(loaders[0]) == len(loaders[1])
        for (_, a), (_, b) in zip(*loaders):
            assert torch.equal(a, b)


class Recorder(L.LightningModule):
    """Keeps the batches its steps see."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(3 * 32 * 32, 10)
        self.train_batches, self.val_batches = [], []

    def training_step(self, batch, batch_idx):
        images, targets = batch
        self.train_batches.append((self.current_epoch, images.clone(), targets.clone()))
        logits = self.layer(images.flatten(1))
        return torch.nn.functional.cross_entropy(logits, targets)

    def validation_step(self, batch, batch_idx):
        self.val_batches.append((batch[0].clone(), batch[1].clone()))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def fit(data, epochs=2) -> Recorder:
    recorder = Recorder()
    trainer = L.Trainer(
        max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )
    trainer.fit(recorder, datamodule=data)
    return recorder


@pytest.mark.parametrize("device_resident", [True, False])
def test_trainer_augments_training_batches_only_and_reshuffles_each_epoch(tmp_path, monkeypatch, device_resident):
    data = cifar_module(tmp_path, monkeypatch, device_resident=device_resident)
    recorder = fit(data)
    stored = data.arrays["val"][0][:16].float() / 255
    mean = torch.tensor(data.normalize.mean).view(1, 3, 1, 1)
    std = torch.tensor(data.normalize.std).view(1, 3, 1, 1)
    torch.testing.assert_close(recorder.val_batches[0][0], (stored - mean) / std)  # not augmented
    # Training batches are the sampler's samples, augmented: same labels, other pixels.
    train_images, train_labels = data.arrays["train"]
    sampler = data.train_dataloader().sampler
    sampler.set_epoch(0)
    first = list(sampler)[:16]
    _, images, labels = recorder.train_batches[0]
    assert torch.equal(labels, train_labels[first])
    plain = (train_images[first].float() / 255 - mean) / std
    assert images.shape == plain.shape and not torch.allclose(images, plain)
    orders = [torch.cat([t for e, _, t in recorder.train_batches if e == n]) for n in (0, 1)]
    assert len(orders[0]) == len(orders[1]) == (len(train_labels) // 16) * 16
    assert not torch.equal(orders[0], orders[1])  # Lightning called set_epoch


def test_mixup_gives_soft_targets_in_training_and_hard_labels_in_validation(tmp_path, monkeypatch):
    data = cifar_module(tmp_path, monkeypatch, mixup_alpha=0.4, cutmix_alpha=1.0)
    recorder = fit(data, epochs=1)
    for _, _, targets in recorder.train_batches:
        assert targets.shape == (16, 10) and targets.dtype == torch.float32
        torch.testing.assert_close(targets.sum(1), torch.ones(16))
        assert (targets >= 0).all()
    assert any((targets.max(1).values < 1).any() for _, _, targets in recorder.train_batches)
    assert recorder.val_batches[0][1].dtype == torch.int64 and recorder.val_batches[0][1].ndim == 1


@pytest.mark.parametrize(
    "options",
    [{"mixup_alpha": 0.2}, {"cutmix_alpha": 1.0}, {"mixup_alpha": 0.2, "cutmix_alpha": 1.0, "cutmix_prob": 0.5}],
)
def test_batch_mixer_targets_sum_to_one_and_match_the_pixels(options):
    torch.manual_seed(0)
    n, classes = 64, 8
    labels = torch.arange(n) % classes
    # Each image is filled with its own label, so the pixels say how much of each class it holds.
    images = labels.float().view(n, 1, 1, 1).expand(n, 3, 16, 16).clone()
    mixer = BatchMixer(classes, **options)
    for _ in range(5):
        mixed, targets = mixer(images.clone(), labels)
        assert targets.shape == (n, classes)
        torch.testing.assert_close(targets.sum(1), torch.ones(n))
        if "cutmix_alpha" in options and "mixup_alpha" not in options:
            # CutMix: the target weight of a class is the share of pixels copied from it.
            own_share = (mixed[:, 0] == labels.float().view(n, 1, 1)).flatten(1).float().mean(1)
            torch.testing.assert_close(targets[torch.arange(n), labels], own_share)
        if "mixup_alpha" in options and "cutmix_alpha" not in options:
            # MixUp: the pixel value is the target-weighted mean of the labels.
            torch.testing.assert_close(mixed[:, 0, 0, 0], targets @ torch.arange(classes).float())


def test_batch_mixer_off_and_never():
    labels = torch.tensor([0, 1, 2])
    images = torch.randn(3, 3, 8, 8)
    off = BatchMixer(3)
    assert not off.active and off(images, labels)[1] is labels
    never = BatchMixer(3, mixup_alpha=0.2, prob=0.0)
    out_images, targets = never(images, labels)
    assert torch.equal(out_images, images) and torch.equal(targets, torch.eye(3))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mixup_alpha": -0.2}, r"data.mixup_alpha is the Beta\(alpha, alpha\) parameter: a number >= 0 .* got -0.2\."),
        ({"cutmix_alpha": float("nan")}, r"data.cutmix_alpha is the Beta.* got nan\."),
        ({"mixup_alpha": float("inf")}, r"data.mixup_alpha is the Beta.* got inf\."),
        ({"mixup_alpha": "lots"}, r"data.mixup_alpha is the Beta.* got 'lots'\."),
        ({"mix_prob": "often"}, r"data.mix_prob is a probability in \[0, 1\], got 'often'\."),
        ({"cutmix_prob": 1.5}, r"data.cutmix_prob is a probability in \[0, 1\], got 1.5\."),
    ],
)
def test_bad_mixing_values_are_config_errors_from_the_data_module(options, message):
    with pytest.raises(ConfigError, match=message):
        SyntheticDataModule(image_size=8, **options)
