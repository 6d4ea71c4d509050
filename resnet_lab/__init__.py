"""resnet_lab: residual networks with PyTorch Lightning and Hydra."""

__version__ = "0.1.0"
