"""The fast image path: crop geometry against torchvision's, decoding, the device-side finish."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from scipy import stats
from torchvision import tv_tensors
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2

from resnet_lab.data.base import UNREADABLE
from resnet_lab.data.crops import (
    Box,
    center_crop_box,
    erase_box,
    random_resized_crop_box,
    sample_generator,
)
from resnet_lab.data.fast_images import (
    BatchFinisher,
    CropPlan,
    EpochSeededSampler,
    FastImageDataset,
    FileSource,
)
from resnet_lab.data.jpeg import decode_crop, exif_orientation, jpeg_size, scale_factor
from tests.helpers.fakes import jpeg_bytes

DRAWS = 4000
# KS tests on fixed seeds: deterministic, so a threshold this low never flakes, while a wrong
# distribution (a uniform instead of a log-uniform ratio, a shifted position) gives p ~ 1e-10.
P_MIN = 1e-3


def _photo(height: int = 96, width: int = 128) -> np.ndarray:
    """A smooth RGB image (JPEG-friendly, unlike noise), different in each quadrant."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)], -1).astype(np.uint8)


def _torchvision_boxes(height, width, scale, ratio, n) -> np.ndarray:
    torch.manual_seed(0)
    crop = v2.RandomResizedCrop(8, scale=scale, ratio=ratio)
    image = tv_tensors.Image(torch.zeros(3, height, width, dtype=torch.uint8))
    params = [crop.make_params([image]) for _ in range(n)]
    return np.array([(p["top"], p["left"], p["height"], p["width"]) for p in params], dtype=float)


def _our_boxes(height, width, scale, ratio, n) -> np.ndarray:
    return np.array(
        [random_resized_crop_box(height, width, scale, ratio, sample_generator(0, 0, i)) for i in range(n)], dtype=float
    )


@pytest.mark.parametrize(
    ("height", "width", "scale"),
    [(340, 450, (0.08, 1.0)), (340, 450, (0.35, 1.0)), (60, 400, (0.08, 1.0))],  # the last hits the fallback
)
def test_crop_scale_ratio_and_position_match_torchvision(height, width, scale):
    ratio = (3 / 4, 4 / 3)
    ours, theirs = _our_boxes(height, width, scale, ratio, DRAWS), _torchvision_boxes(height, width, scale, ratio, DRAWS)
    for name, column in {
        "area fraction": lambda b: b[:, 2] * b[:, 3] / (height * width),
        "log aspect ratio": lambda b: np.log(b[:, 3] / b[:, 2]),
        "centre row": lambda b: (b[:, 0] + b[:, 2] / 2) / height,
        "centre column": lambda b: (b[:, 1] + b[:, 3] / 2) / width,
    }.items():
        p = stats.ks_2samp(column(ours), column(theirs)).pvalue
        assert p > P_MIN, f"{name}: KS p = {p:.2g}"
    assert (ours[:, 0] + ours[:, 2] <= height).all() and (ours[:, 1] + ours[:, 3] <= width).all()


def test_the_ks_check_sees_a_wrong_ratio_distribution():
    """The check above has power: a ratio drawn uniformly (not log-uniformly) in [1/2, 2] fails it."""
    rng = np.random.default_rng(0)
    wrong = np.log(rng.uniform(0.5, 2.0, DRAWS))
    theirs = _torchvision_boxes(340, 450, (0.08, 1.0), (0.5, 2.0), DRAWS)
    assert stats.ks_2samp(wrong, np.log(theirs[:, 3] / theirs[:, 2])).pvalue < P_MIN


def test_erase_boxes_match_torchvision():
    torch.manual_seed(0)
    erasing = v2.RandomErasing(p=1.0)
    image = tv_tensors.Image(torch.zeros(3, 32, 32))
    theirs = np.array([[p["i"], p["j"], p["h"], p["w"]] for p in (erasing.make_params([image]) for _ in range(DRAWS))], dtype=float)
    ours = np.array([erase_box(32, 32, sample_generator(1, 0, i)) for i in range(DRAWS)], dtype=float)
    for column in range(4):
        assert stats.ks_2samp(ours[:, column], theirs[:, column]).pvalue > P_MIN


@pytest.mark.parametrize(("height", "width"), [(340, 450), (450, 340), (256, 256), (301, 1000)])
def test_centre_crop_box_is_resize_then_centre_crop(height, width):
    """Cropping the box and resizing it gives torchvision's Resize + CenterCrop, up to resampling."""
    image = torch.from_numpy(_photo(height, width)).permute(2, 0, 1).contiguous()
    reference = v2.CenterCrop(224)(v2.Resize(256, antialias=True)(image)).float()
    box = center_crop_box(height, width, 224, 256)
    crop = image[:, box.top : box.top + box.height, box.left : box.left + box.width]
    ours = v2.functional.resize(crop, [224, 224], antialias=True).float()
    assert (ours - reference).abs().mean() < 1.0  # levels of 255, on a smooth image


def test_sample_generators_are_a_function_of_seed_epoch_and_index():
    draw = lambda *key: sample_generator(*key).random()  # noqa: E731
    assert draw(0, 1, 2) == draw(0, 1, 2)
    assert len({draw(0, 1, 2), draw(1, 1, 2), draw(0, 2, 2), draw(0, 1, 3), draw(-1, 1, 2)}) == 5


def test_decode_crop_is_torchvision_decode_then_crop_and_resize():
    data = jpeg_bytes(_photo(96, 128))
    box = Box(10, 20, 50, 70)
    ours = decode_crop(data, 32, lambda h, w: box)
    full = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    reference = v2.functional.resized_crop(full, *box, [32, 32], antialias=True)
    assert ours.shape == (3, 32, 32) and ours.dtype == torch.uint8 and ours.is_contiguous()
    assert (ours.int() - reference.int()).abs().max() <= 1  # the same decoder; resampling rounding only


def test_scaled_decoding_when_the_crop_allows_it():
    assert scale_factor(Box(0, 0, 1800, 2000), 224) == 8
    assert scale_factor(Box(0, 0, 900, 2000), 224) == 4
    assert scale_factor(Box(0, 0, 447, 2000), 224) == 1
    big = jpeg_bytes(np.repeat(np.repeat(_photo(96, 128), 8, 0), 8, 1))  # 768 x 1024
    full = decode_image(torch.frombuffer(bytearray(big), dtype=torch.uint8)).float()
    reference = v2.functional.resize(full, [48, 64], antialias=True)
    ours = decode_crop(big, 48, lambda h, w: Box(0, 0, h, w) if (h, w) == (768, 1024) else None)
    # A quarter-size decode, then 192 x 256 -> 48 x 48: the whole image, squeezed.
    squeezed = v2.functional.resize(reference, [48, 48], antialias=True)
    assert (ours.float() - squeezed).abs().mean() < 2.0


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_as_pillow(orientation):
    image = Image.fromarray(_photo(40, 64))
    exif = image.getexif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95, exif=exif.tobytes())
    data = buffer.getvalue()
    assert exif_orientation(data) == orientation
    upright = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    assert jpeg_size(data)[:2] == upright.shape[:2]
    ours = decode_crop(data, 16, lambda h, w: Box(0, 0, 16, 16))
    assert torch.equal(ours, torch.from_numpy(upright[:16, :16].copy()).permute(2, 0, 1))


def test_png_grayscale_and_broken_files(tmp_path):
    png = io.BytesIO()
    Image.fromarray(_photo(40, 40)).save(png, format="PNG")
    out = decode_crop(png.getvalue(), 40, lambda h, w: Box(0, 0, h, w))
    assert torch.equal(out, torch.from_numpy(_photo(40, 40)).permute(2, 0, 1))
    gray = decode_crop(jpeg_bytes(_photo(40, 40)), 40, lambda h, w: Box(0, 0, h, w), in_chans=1)
    reference = decode_image(torch.frombuffer(bytearray(jpeg_bytes(_photo(40, 40))), dtype=torch.uint8), mode=ImageReadMode.GRAY)
    assert gray.shape == (1, 40, 40) and torch.equal(gray, reference)
    files = [tmp_path / "good.jpg", tmp_path / "broken.jpg"]
    files[0].write_bytes(jpeg_bytes(_photo()))
    files[1].write_bytes(b"\xff\xd8\xff\xe0 not a JPEG after all")
    data = FastImageDataset(FileSource(files, [0, 1]), CropPlan(16, 18), train=False)
    assert data[0][1] == 0 and data[1][1] == UNREADABLE and not data[1][0].any()


def test_training_samples_depend_on_seed_epoch_and_index_only(tmp_path):
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.jpg")
        paths[-1].write_bytes(jpeg_bytes(np.roll(_photo(), 7 * i, axis=1)))
    plan = CropPlan(24, 28, random_erasing=0.5, auto_augment="trivialaugment")
    data = FastImageDataset(FileSource(paths, [0, 1, 2]), plan, train=True, seed=3)
    torch.manual_seed(123)
    first = data[(1, 4)]
    torch.manual_seed(456)  # the global generator plays no part, and is left as it was
    state = torch.get_rng_state()
    again = data[(1, 4)]
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first[0], again[0]) and torch.equal(first[2], again[2]) and first[1] == 1
    assert not torch.equal(data[(1, 5)][0], first[0])  # the next epoch draws anew
    assert first[0].shape == (3, 24, 24) and first[2].shape == (4,)


def test_the_sampler_tags_each_index_with_its_epoch():
    sampler = EpochSeededSampler(range(10), num_replicas=2, rank=1, shuffle=True, seed=0, drop_last=True)
    sampler.set_epoch(3)
    pairs = list(sampler)
    plain = torch.utils.data.DistributedSampler(range(10), num_replicas=2, rank=1, shuffle=True, seed=0, drop_last=True)
    plain.set_epoch(3)
    assert pairs == [(index, 3) for index in plain]


def test_device_normalization_is_torchvisions_bit_for_bit():
    images = torch.randint(0, 256, (4, 3, 20, 24), dtype=torch.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    reference = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])
    expected = torch.stack([reference(image) for image in images])
    ours = BatchFinisher(mean, std).normalize(images)
    assert ours.dtype == torch.float32 and torch.equal(ours, expected)


def test_erasing_on_the_device_is_torchvisions_erase_with_zero():
    images = torch.randn(2, 3, 10, 12)
    boxes = torch.tensor([[1, 2, 3, 4], [0, 0, 0, 0]])
    expected = images.clone()
    expected[0] = v2.functional.erase(images[0], 1, 2, 3, 4, torch.tensor(0.0))
    assert torch.equal(BatchFinisher.erase(images, boxes), expected)


# --------------------------------------------------------------------- decoding on the device


def _module(root, **options):
    from resnet_lab.data import ImageNetSubsetDataModule

    options = {"subset": None, "num_classes": 2, "image_size": 24, "batch_size": 6, "eval_batch_size": 6, **options}
    data = ImageNetSubsetDataModule(root=root, **options)
    data.setup()
    return data


@pytest.fixture(scope="module")
def photo_tree(tmp_path_factory):
    """Two classes of smooth photos (JPEG), with one PNG and one broken file among them."""
    root = tmp_path_factory.mktemp("photos")
    for split, count in (("train", 6), ("val", 3)):
        for label, wnid in enumerate(("n01440764", "n02102040")):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(count):
                image = np.roll(_photo(60 + 4 * i, 80), 9 * i + 30 * label, axis=1)
                (folder / f"{i}.JPEG").write_bytes(jpeg_bytes(image))
    Image.fromarray(_photo(50, 70)).save(root / "train" / "n01440764" / "png.png")
    (root / "train" / "n02102040" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a JPEG after all")
    return root


def _batches(data, device: torch.device):
    """Every training batch of epoch 0 as it reaches the network (CPU stands in for the device)."""
    data.trainer = None
    out = []
    for batch in data.train_dataloader():
        batch = data.on_before_batch_transfer(batch, 0)
        batch = tuple(part.to(device) if torch.is_tensor(part) else part for part in batch)
        out.append(batch)
    return out


def test_device_decoding_draws_the_same_crops_as_the_workers(photo_tree):
    """decode_on=device (torchvision's decode_jpeg on the CPU here) against the workers' path:
    the same samples, labels, crops, flips and erase boxes; the broken file is dropped once."""
    # 48 px crops of images at most 80 px on a side: the workers never decode at a reduced
    # scale, which the device decoder cannot do, so the pixels are comparable.
    workers = _module(photo_tree, random_erasing=0.5, image_size=48)
    device = _module(photo_tree, random_erasing=0.5, decode_on="device", image_size=48)
    assert device.collate_fn(device.train_set) is not None
    for ours, theirs in zip(_batches(device, torch.device("cpu")), _batches(workers, torch.device("cpu"))):
        assert ours[0].dtype == torch.uint8 and ours[0].shape == theirs[0].shape == (6, 3, 48, 48)
        assert torch.equal(ours[1], theirs[1]) and torch.equal(ours[2], theirs[2])
        # The same decoder; torchvision's resize and interpolate's uint8 path round differently.
        difference = (ours[0][ours[1] != UNREADABLE].float() - theirs[0][theirs[1] != UNREADABLE].float()).abs()
        assert difference.mean() < 0.5  # levels of 255 (a few levels at most, on sharp edges)
    assert sum(int((labels == UNREADABLE).sum()) for _, labels, *_ in _batches(device, torch.device("cpu"))) == 1


def test_policies_need_decoded_images_in_the_workers(photo_tree):
    from resnet_lab.errors import ConfigError

    with pytest.raises(ConfigError, match="auto_augment=trivialaugment runs on decoded images"):
        _module(photo_tree, decode_on="device", auto_augment="trivialaugment")
    with pytest.raises(ConfigError, match="data.decode_on='gpu' is not an option"):
        _module(photo_tree, decode_on="gpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="nvJPEG decoding needs a CUDA device; none is visible")
def test_nvjpeg_decoding_on_the_gpu_matches_the_cpu_path(photo_tree):
    cuda = torch.device("cuda")
    device = _module(photo_tree, decode_on="device")
    device.trainer = None
    device.__class__.device = property(lambda self: cuda)  # what the trainer's strategy would say
    workers = _module(photo_tree)
    try:
        for ours, theirs in zip(_batches(device, cuda), _batches(workers, cuda)):
            assert ours[0].device.type == "cuda" and torch.equal(ours[1], theirs[1])
            readable = ours[1] != UNREADABLE
            assert (ours[0][readable].float() - theirs[0][readable].float()).abs().mean() < 2.0
            images, _ = device.on_after_batch_transfer(ours, 0)
            assert images.device.type == "cuda" and images.dtype == torch.float32
    finally:
        del device.__class__.device


def test_every_augmentation_stays_available_on_the_fast_path(photo_tree):
    """TrivialAugment in the workers, random erasing and MixUp on the device, the balanced
    sampler handing its draw to the workers with the epoch."""
    from types import SimpleNamespace

    data = _module(photo_tree, auto_augment="trivialaugment", random_erasing=1.0, mixup_alpha=0.4, balanced_sampler=True)
    loader = data.train_dataloader()
    assert type(loader.sampler).__name__ == "EpochSeededBalancedDistributedSampler"
    assert all(isinstance(key, tuple) and key[1] == 0 for key in loader.sampler)
    images, labels, boxes = next(iter(loader))
    assert images.dtype == torch.uint8 and boxes.shape == (6, 4) and (boxes[:, 2] > 0).any()
    data.trainer = SimpleNamespace(training=True, world_size=1, global_rank=0)
    try:
        finished, targets = data.on_after_batch_transfer((images, labels, boxes), 0)
    finally:
        data.trainer = None
    readable = int((labels != UNREADABLE).sum())  # the broken file may be drawn
    assert finished.dtype == torch.float32 and targets.shape == (readable, 2)  # MixUp soft targets
    top, left, height, width = boxes[boxes[:, 2] > 0][0].tolist()
    erased = BatchFinisher.erase(BatchFinisher(data.transforms.mean, data.transforms.std).normalize(images), boxes)
    assert (erased[boxes[:, 2] > 0][0][:, top : top + height, left : left + width] == 0).all()


def test_the_evaluation_crop_is_torchvisions_resize_and_centre_crop(photo_tree):
    """The fast path's evaluation sample against ImageFileTransforms.eval() on the same file."""
    from resnet_lab.data.image_files import decode_image_file

    data = _module(photo_tree, image_size=32, eval_resize_size=40)
    reference = data.transforms.eval()
    finisher = BatchFinisher(data.transforms.mean, data.transforms.std)
    for index in range(len(data.val_set)):
        ours = finisher.normalize(data.val_set[index][0].unsqueeze(0))[0]
        theirs = reference(decode_image_file(data.val_set.source.name(index)))
        assert (ours - theirs).abs().mean() < 0.05  # ~2.5 levels of 255, over a normalized std ~0.23
