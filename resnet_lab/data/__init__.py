"""Lightning data modules. They know nothing of models."""

from resnet_lab.data.base import ImageDataModule, per_device_batch_size
from resnet_lab.data.digits import DigitsDataModule
from resnet_lab.data.synthetic import SyntheticDataModule

__all__ = ["DigitsDataModule", "ImageDataModule", "SyntheticDataModule", "per_device_batch_size"]
