"""Lightning data modules. They know nothing of models."""

from resnet_lab.data.base import ImageDataModule, per_device_batch_size
from resnet_lab.data.cifar import CifarDataModule
from resnet_lab.data.digits import DigitsDataModule
from resnet_lab.data.fashion_mnist import FashionMnistDataModule
from resnet_lab.data.folder import FolderDataModule
from resnet_lab.data.imagenet import ImageNetSubsetDataModule
from resnet_lab.data.in_memory import InMemoryImageDataModule
from resnet_lab.data.synthetic import SyntheticDataModule

__all__ = [
    "CifarDataModule",
    "DigitsDataModule",
    "FashionMnistDataModule",
    "FolderDataModule",
    "ImageDataModule",
    "ImageNetSubsetDataModule",
    "InMemoryImageDataModule",
    "SyntheticDataModule",
    "per_device_batch_size",
]
