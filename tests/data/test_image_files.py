"""The image-file base shared by the ImageNet-style and folder data modules: decoding every
format and mode, the transforms' knobs, scanning and the seeded splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from resnet_lab.data.image_files import (
    ImageFileDataset,
    decode_image_file,
    list_image_files,
    random_holdout,
    stratified_split,
)
from resnet_lab.data.image_transforms import ImageFileTransforms
from resnet_lab.errors import ConfigError, DataError
from tests.helpers.fakes import photo_crops, save_image

FORMATS = (".jpg", ".png", ".webp", ".bmp")
MODES = ("RGB", "L", "RGBA", "P", "1")


def pillow_reference(path, in_chans: int) -> np.ndarray:
    """What torchvision's and timm's ImageFolder loaders give: Pillow's convert()."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB" if in_chans == 3 else "L"), dtype=np.int16).reshape(
            image.height, image.width, in_chans
        )


@pytest.fixture(scope="module")
def photo():
    return photo_crops(1, size=(40, 32), seed=3)[0]


@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("in_chans", (3, 1))
def test_every_format_and_mode_decodes_to_uint8_with_the_asked_channels(tmp_path, photo, suffix, mode, in_chans):
    if suffix == ".jpg" and mode in ("RGBA", "P"):
        pytest.skip("JPEG stores neither alpha nor a palette")
    path = save_image(tmp_path / f"image{suffix}", photo, mode)
    image = decode_image_file(str(path), in_chans)
    assert image.dtype == torch.uint8 and tuple(image.shape) == (in_chans, 32, 40)
    difference = np.abs(image.permute(1, 2, 0).numpy().astype(np.int16) - pillow_reference(path, in_chans))
    # Lossless formats decode to Pillow's pixels; luminance may round differently by one level,
    # and two JPEG decoders may differ by a few levels on a few pixels.
    limit = 40 if suffix == ".jpg" else (1 if in_chans == 1 else 0)
    assert difference.max() <= limit and difference.mean() < 1.5


def test_sixteen_bit_png_is_scaled_to_eight_bits(tmp_path, photo):
    path = save_image(tmp_path / "deep.png", photo, "I;16")
    assert Image.open(path).mode == "I;16"
    grey = np.asarray(Image.fromarray(photo).convert("L"), dtype=np.int16)
    for in_chans in (1, 3):
        image = decode_image_file(str(path), in_chans)
        assert image.dtype == torch.uint8 and image.shape[0] == in_chans
        assert np.abs(image[0].numpy().astype(np.int16) - grey).max() <= 1


def test_exif_orientation_is_applied(tmp_path, photo):
    """A phone photo taken upright but stored sideways (orientation 6) comes out upright."""
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "phone.jpg"
    Image.fromarray(photo).save(path, exif=exif.tobytes(), quality=95)
    image = decode_image_file(str(path), 3)
    assert tuple(image.shape) == (3, 40, 32)


def test_a_file_that_is_not_an_image_raises_for_the_dataset_to_skip(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises((RuntimeError, OSError, ValueError)):
        decode_image_file(str(path), 3)
    dataset = ImageFileDataset([str(path)], [0], lambda image: image, image_size=8, in_chans=1)
    image, label = dataset[0]
    assert label == -1 and tuple(image.shape) == (1, 8, 8)


def test_listing_refuses_non_images_and_ignores_hidden_files(tmp_path, photo):
    save_image(tmp_path / "b.PNG", photo)
    save_image(tmp_path / "a.jpeg", photo)
    (tmp_path / ".DS_Store").write_bytes(b"")
    assert [p.rsplit("/", 1)[1] for p in list_image_files(tmp_path)] == ["a.jpeg", "b.PNG"]
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"notes.txt is not an image file \(.jpeg, .jpg, .png, .webp, .bmp\)"):
        list_image_files(tmp_path)


def test_transforms_sizes_and_knobs():
    transforms = ImageFileTransforms(image_size=24, scale=[0.5, 1.0], ratio=[1.0, 1.0], auto_augment="randaugment")
    assert transforms.eval_resize_size == round(24 / 0.875)
    image = torch.randint(0, 256, (3, 50, 70), dtype=torch.uint8)
    for transform in (transforms.train(), transforms.eval()):
        out = transform(image)
        assert out.dtype == torch.float32 and tuple(out.shape) == (3, 24, 24)
    names = [type(step).__name__ for step in transforms.train().transforms]
    assert names[:3] == ["RandomResizedCrop", "RandomHorizontalFlip", "RandAugment"]
    grey = ImageFileTransforms(image_size=16, auto_augment="trivialaugment", random_erasing=0.5, mean=(0.5,), std=(0.25,))
    assert tuple(grey.train()(image[:1]).shape) == (1, 16, 16)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"scale": [0.0, 1.0]}, r"data.scale=\[0.0, 1.0\] must satisfy 0.0 < min <= max <= 1.0"),
        ({"scale": [0.5]}, r"data.scale must be a pair \[min, max\]"),
        ({"ratio": [2, 1]}, r"data.ratio=\[2.0, 1.0\]"),
        ({"eval_resize_size": 10}, "smaller than data.image_size=16"),
        ({"auto_augment": "augmix"}, "not a policy; choose one of trivialaugment, randaugment, autoaugment"),
        ({"random_erasing": 1.5}, r"data.random_erasing is a probability in \[0, 1\]"),
        ({"std": (0.0, 1.0, 1.0)}, "std > 0"),
    ],
)
def test_bad_transform_knobs_are_config_errors(options, message):
    with pytest.raises(ConfigError, match=message):
        ImageFileTransforms(image_size=16, **options)


def test_random_holdout_is_seeded_and_disjoint():
    kept, held = random_holdout(20, 5, seed=1)
    assert len(held) == 5 and sorted(kept + held) == list(range(20))
    assert random_holdout(20, 5, seed=1) == (kept, held) != random_holdout(20, 5, seed=2)


def test_stratified_split_takes_each_class_share_and_at_least_one():
    labels = [0] * 20 + [1] * 5 + [2] * 3
    split = stratified_split(labels, {"val": 0.1, "test": 0.2}, seed=0, class_names="abc", source="here")
    counts = {name: np.bincount(np.asarray(labels)[index], minlength=3).tolist() for name, index in split.items()}
    assert counts == {"val": [2, 1, 1], "test": [4, 1, 1], "train": [14, 3, 1]}
    assert sorted(sum(split.values(), [])) == list(range(len(labels)))
    assert split == stratified_split(labels, {"val": 0.1, "test": 0.2}, seed=0, class_names="abc", source="here")
    assert split != stratified_split(labels, {"val": 0.1, "test": 0.2}, seed=1, class_names="abc", source="here")
    with pytest.raises(DataError, match=r"class 'c' of here has 2 image\(s\): too few to keep one for training"):
        stratified_split([0] * 9 + [1] * 5 + [2] * 2, {"val": 0.1, "test": 0.1}, seed=0, class_names="abc", source="here")
