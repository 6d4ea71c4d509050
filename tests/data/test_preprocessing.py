"""EvalPreprocessing: each data module's evaluation preprocessing as data, and its transform,
which gives a new image what the data module gives its test images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from resnet_lab.data import CifarDataModule, DigitsDataModule, FolderDataModule, SyntheticDataModule
from resnet_lab.data.cifar import CIFAR_RELEASES
from resnet_lab.data.image_files import decode_image_file
from resnet_lab.data.image_transforms import ImageFileTransforms
from resnet_lab.data.preprocessing import EvalPreprocessing
from tests.helpers.fakes import write_cifar, write_photo_folder


@pytest.mark.parametrize(("size", "resize", "in_chans"), [((37, 53), None, 3), ((20, 20), 40, 1), ((64, 17), 24, 3)])
def test_transform_equals_the_image_file_evaluation_transform(size, resize, in_chans):
    transforms = ImageFileTransforms(image_size=24, eval_resize_size=resize, mean=(0.4,) * in_chans, std=(0.2,) * in_chans)
    preprocessing = EvalPreprocessing(in_chans=in_chans, resize_size=transforms.eval_resize_size, crop_size=24,
                                      mean=transforms.mean, std=transforms.std)
    image = torch.randint(0, 256, (in_chans, *size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(preprocessing.transform()(image), transforms.eval()(image))


def test_folder_module_describes_its_evaluation_transform(tmp_path):
    root = write_photo_folder(tmp_path / "photos", per_class=4)
    data = FolderDataModule(root=root, image_size=16, eval_resize_size=20, mean=[0.5, 0.4, 0.3], std=[0.2, 0.3, 0.4])
    # The fast path cuts the centre square first and resizes it alone; torchvision's resizes first.
    assert data.eval_preprocessing() == EvalPreprocessing(3, 20, 16, (0.5, 0.4, 0.3), (0.2, 0.3, 0.4), crop_first=True)
    data = FolderDataModule(root=root, image_size=16, eval_resize_size=20, pipeline="torchvision")
    assert not data.eval_preprocessing().crop_first


@pytest.mark.parametrize("pipeline", ["fast", "torchvision"])
def test_transform_gives_a_file_what_the_folder_test_set_gives_it(tmp_path, pipeline):
    """Lossless files (PNG, BMP) and small JPEGs: bit for bit the test set's normalized crop."""
    data = FolderDataModule(root=write_photo_folder(tmp_path / "photos", per_class=6), image_size=16,
                            eval_resize_size=19, test_fraction=0.5, pipeline=pipeline)
    data.setup("test")
    transform = data.eval_preprocessing().transform()
    for index in range(len(data.test_set)):
        image, label = data.test_set[index]
        (expected,), _ = data.on_after_batch_transfer((image[None], torch.tensor([label])), 0)
        path = data.test_set.paths[index].decode()
        assert torch.equal(transform(decode_image_file(path)), expected), path


def test_in_memory_module_gives_a_test_image_what_its_test_set_gives(tmp_path, monkeypatch):
    monkeypatch.setitem(CIFAR_RELEASES, "cifar10", write_cifar(tmp_path, train_per_file=10, test_size=5, archive=False))
    data = CifarDataModule(root=tmp_path, val_size=5, download=False, device_resident=False)
    data.setup("test")
    transform = data.eval_preprocessing().transform()
    images, _ = data.arrays["test"]
    for index in range(len(images)):
        assert torch.equal(transform(images[index]), data.test_set[index][0])


def test_every_module_without_files_describes_itself():
    digits, synthetic = DigitsDataModule(), SyntheticDataModule(image_size=16, in_chans=1)
    assert (digits.eval_preprocessing().in_chans, digits.eval_preprocessing().crop_size) == (1, 32)
    assert synthetic.eval_preprocessing() == EvalPreprocessing(1, 16, 16, (0.5,), (0.5,))


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P", "1"])
def test_any_pil_mode_becomes_the_models_channels(mode):
    rgb = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    image = Image.fromarray(rgb).convert(mode)
    for in_chans in (1, 3):
        out = EvalPreprocessing.square(in_chans, 16, (0.5,) * in_chans, (0.5,) * in_chans).transform()(image)
        assert out.shape == (in_chans, 16, 16) and out.dtype == torch.float32


def test_tensors_of_any_channel_layout():
    transform = EvalPreprocessing.square(3, 8, (0.0,) * 3, (1.0,) * 3).transform()
    grey = torch.full((10, 10), 255, dtype=torch.uint8)
    assert torch.equal(transform(grey), torch.ones(3, 8, 8))  # (H, W) grey, repeated to RGB
    rgba = torch.cat([torch.zeros(3, 10, 10, dtype=torch.uint8), torch.full((1, 10, 10), 255, dtype=torch.uint8)])
    assert torch.equal(transform(rgba), torch.zeros(3, 8, 8))  # alpha dropped
    with pytest.raises(TypeError, match="uint8 tensor"):
        transform(torch.rand(3, 10, 10))
    with pytest.raises(TypeError, match="PIL image or a uint8 tensor"):
        transform(np.zeros((10, 10, 3), dtype=np.uint8))


def test_dict_round_trip_and_malformed_dicts():
    preprocessing = EvalPreprocessing(3, 256, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert EvalPreprocessing.from_dict(preprocessing.to_dict()) == preprocessing
    fast = EvalPreprocessing(3, 256, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), crop_first=True)
    assert EvalPreprocessing.from_dict(fast.to_dict()) == fast
    older = {key: value for key, value in fast.to_dict().items() if key != "crop_first"}
    assert EvalPreprocessing.from_dict(older) == preprocessing  # checkpoints from before the field
    for bad, message in (({"in_chans": 3}, "missing resize_size"),
                         ({**preprocessing.to_dict(), "crop_size": 300}, "crop_size <= resize_size"),
                         ({**preprocessing.to_dict(), "mean": [0.5]}, "need 3 means"),
                         ({**preprocessing.to_dict(), "in_chans": 2}, "in_chans must be 1 or 3")):
        with pytest.raises(ValueError, match=message):
            EvalPreprocessing.from_dict(bad)
