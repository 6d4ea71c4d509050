"""Lightning data modules. They know nothing of models.

``RESOLVERS``: the OmegaConf resolvers the data configs use, for entry points to register.
"""

from resnet_lab.data.base import ImageDataModule, per_device_batch_size
from resnet_lab.data.cifar import CifarDataModule
from resnet_lab.data.digits import DigitsDataModule
from resnet_lab.data.fashion_mnist import FashionMnistDataModule
from resnet_lab.data.folder import FolderDataModule
from resnet_lab.data.folder_sources import count_classes
from resnet_lab.data.imagenet import ImageNetSubsetDataModule
from resnet_lab.data.in_memory import InMemoryImageDataModule
from resnet_lab.data.synthetic import SyntheticDataModule

# data=folder's num_classes, counted from its class folders or CSV index (conf/data/folder.yaml).
RESOLVERS = (("folder_classes", count_classes, True),)

__all__ = [
    "RESOLVERS",
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
