"""Residual blocks and the shortcuts that join them.

All four blocks share one constructor signature, ``(in_chans, width, stride, shortcut,
BlockOptions)``, and an ``expansion`` attribute, so the
network builds any of them the same way. Optional parts (squeeze-excitation, stochastic
depth, dropout) are ``nn.Identity`` when off, and each block knows how to
``zero_init_last()`` its residual branch. State-dict names follow torchvision
(``conv1``, ``bn1``, ``downsample.0``) and, for squeeze-excitation, timm (``se.fc1``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import SqueezeExcitation, StochasticDepth


@dataclass(frozen=True)
class BlockOptions:
    """What varies between the blocks of one architecture beyond their shapes.

    groups, width_per_group: bottleneck grouping (ResNeXt) and width (Wide ResNet).
    se_ratio: squeeze-excitation reduction (0: off). drop_path_rate: this block's stochastic
    depth. block_dropout: dropout between the convolutions of the residual branch (WRN).
    """

    groups: int = 1
    width_per_group: int = 64
    se_ratio: float = 0.0
    drop_path_rate: float = 0.0
    block_dropout: float = 0.0


def conv3x3(in_chans: int, out_chans: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_chans, out_chans, 3, stride=stride, padding=1, groups=groups, bias=False)


def conv1x1(in_chans: int, out_chans: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_chans, out_chans, 1, stride=stride, bias=False)


def squeeze_channels(channels: int, se_ratio: float) -> int:
    """Channels of the squeeze-excitation bottleneck: ``channels * se_ratio`` rounded to a
    multiple of 8 (at least 8), as timm rounds it, so timm's SE-ResNet weights load.

    For ResNet-50's stages (256..2048 channels, ratio 1/16) this is exactly Hu et al.'s C/16.
    """
    return max(8, int(channels * se_ratio + 4) // 8 * 8)


def squeeze_excitation(channels: int, se_ratio: float) -> nn.Module:
    if se_ratio == 0:
        return nn.Identity()
    return SqueezeExcitation(channels, squeeze_channels(channels, se_ratio))


def dropout(p: float) -> nn.Module:
    return nn.Dropout(p) if p > 0 else nn.Identity()


def drop_path(p: float) -> nn.Module:
    """Stochastic depth (Huang et al. 2016): drop the residual branch per sample with
    probability ``p`` during training, scaling survivors by 1 / (1 - p)."""
    return StochasticDepth(p, mode="row") if p > 0 else nn.Identity()


class ZeroPadShortcut(nn.Module):
    """He et al. 2015 option A: an identity shortcut that subsamples by ``stride`` and pads
    the extra output channels with zeros. Parameter-free."""

    def __init__(self, in_chans: int, out_chans: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra_chans = out_chans - in_chans

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_chans))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, extra_chans={self.extra_chans}"


class NoShortcut(nn.Module):
    """The "shortcut" of a plain network (He et al. 2015, section 4.1): adds nothing."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(())


def make_shortcut(
    kind: str, in_chans: int, out_chans: int, stride: int, *, residual: bool, norm: bool
) -> nn.Module:
    """The shortcut of one block.

    ``kind`` applies only where the shape changes; elsewhere the shortcut is the identity
    (He et al. 2015 option B for projections). ``norm=False`` leaves the batch norm out of
    a projection, as pre-activation networks do (He et al. 2016; Zagoruyko and Komodakis).
    The caller has checked that ``kind`` fits the shapes (``resnet.check_architecture``).
    """
    if not residual:
        return NoShortcut()
    if stride == 1 and in_chans == out_chans:
        return nn.Identity()
    if kind == "zeropad":
        return ZeroPadShortcut(in_chans, out_chans, stride)
    norm_layer = [nn.BatchNorm2d(out_chans)] if norm else []
    if kind == "avgpool":
        # ResNet-D (He et al. 2019, "Bag of Tricks", section 4.1): average-pool then a
        # stride-1 projection, so the shortcut sees every input pixel. ceil_mode and
        # count_include_pad=False as in timm and GluonCV, whose weights this must load.
        pool = (
            nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False)
            if stride > 1
            else nn.Identity()
        )
        return nn.Sequential(pool, conv1x1(in_chans, out_chans), *norm_layer)
    return nn.Sequential(conv1x1(in_chans, out_chans, stride), *norm_layer)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions, each followed by batch norm; ReLU after the addition
    (He et al. 2015, Fig. 2)."""

    expansion = 1
    preact = False

    def __init__(
        self, in_chans: int, width: int, stride: int = 1, shortcut: nn.Module | None = None,
        options: BlockOptions = BlockOptions(),
    ) -> None:
        super().__init__()
        out_chans = width * self.expansion
        self.conv1 = conv3x3(in_chans, width, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.act1 = nn.ReLU(inplace=True)
        self.dropout = dropout(options.block_dropout)
        self.conv2 = conv3x3(width, out_chans)
        self.bn2 = nn.BatchNorm2d(out_chans)
        self.se = squeeze_excitation(out_chans, options.se_ratio)
        self.drop_path = drop_path(options.drop_path_rate)
        self.downsample = shortcut if shortcut is not None else nn.Identity()
        self.act2 = nn.ReLU(inplace=True)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.dropout(self.act1(self.bn1(self.conv1(x))))
        out = self.drop_path(self.se(self.bn2(self.conv2(out))))
        out += self.downsample(x)  # in place, as torchvision: no extra activation-sized tensor
        return self.act2(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (grouped for ResNeXt), 1x1 expand, each followed by batch norm.

    The stride sits on the 3x3 convolution, as in torchvision ("ResNet v1.5"); the
    inner width ``int(width * width_per_group / 64) * groups`` covers ResNet, ResNeXt
    (groups > 1) and Wide ResNet (width_per_group > 64) with one formula.
    """

    expansion = 4
    preact = False

    def __init__(
        self, in_chans: int, width: int, stride: int = 1, shortcut: nn.Module | None = None,
        options: BlockOptions = BlockOptions(),
    ) -> None:
        super().__init__()
        inner = bottleneck_width(width, options.groups, options.width_per_group)
        out_chans = width * self.expansion
        self.conv1 = conv1x1(in_chans, inner)
        self.bn1 = nn.BatchNorm2d(inner)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(inner, inner, stride, options.groups)
        self.bn2 = nn.BatchNorm2d(inner)
        self.act2 = nn.ReLU(inplace=True)
        self.dropout = dropout(options.block_dropout)
        self.conv3 = conv1x1(inner, out_chans)
        self.bn3 = nn.BatchNorm2d(out_chans)
        self.se = squeeze_excitation(out_chans, options.se_ratio)
        self.drop_path = drop_path(options.drop_path_rate)
        self.downsample = shortcut if shortcut is not None else nn.Identity()
        self.act3 = nn.ReLU(inplace=True)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.dropout(self.act2(self.bn2(self.conv2(out))))
        out = self.drop_path(self.se(self.bn3(self.conv3(out))))
        out += self.downsample(x)
        return self.act3(out)


class PreActBasicBlock(nn.Module):
    """Batch norm and ReLU before each 3x3 convolution, nothing after the addition
    (He et al. 2016, "Identity Mappings", Fig. 1b). With ``block_dropout`` between the
    convolutions it is the wide-ResNet block B(3,3) (Zagoruyko and Komodakis 2016).

    A shortcut that changes the shape reads the pre-activated input, an identity
    shortcut the raw one (He et al.'s fb.resnet.torch "both_preact"; the WRN code).
    """

    expansion = 1
    preact = True

    def __init__(
        self, in_chans: int, width: int, stride: int = 1, shortcut: nn.Module | None = None,
        options: BlockOptions = BlockOptions(),
    ) -> None:
        super().__init__()
        out_chans = width * self.expansion
        self.bn1 = nn.BatchNorm2d(in_chans)
        self.act1 = nn.ReLU(inplace=True)
        self.conv1 = conv3x3(in_chans, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.act2 = nn.ReLU(inplace=True)
        self.dropout = dropout(options.block_dropout)
        self.conv2 = conv3x3(width, out_chans)
        self.se = squeeze_excitation(out_chans, options.se_ratio)
        self.drop_path = drop_path(options.drop_path_rate)
        self.downsample = shortcut if shortcut is not None else nn.Identity()
        self.shortcut_reads_preact = stride != 1 or in_chans != out_chans

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        preact = self.act1(self.bn1(x))
        shortcut = self.downsample(preact if self.shortcut_reads_preact else x)
        out = self.dropout(self.act2(self.bn2(self.conv1(preact))))
        out = self.drop_path(self.se(self.conv2(out)))
        out += shortcut
        return out


class PreActBottleneck(nn.Module):
    """The pre-activation bottleneck of He et al. 2016 (ResNet-164, ResNet-1001): batch
    norm and ReLU before each of the 1x1, 3x3 and 1x1 convolutions. Widths and stride as
    in ``Bottleneck``; shortcut input as in ``PreActBasicBlock``."""

    expansion = 4
    preact = True

    def __init__(
        self, in_chans: int, width: int, stride: int = 1, shortcut: nn.Module | None = None,
        options: BlockOptions = BlockOptions(),
    ) -> None:
        super().__init__()
        inner = bottleneck_width(width, options.groups, options.width_per_group)
        out_chans = width * self.expansion
        self.bn1 = nn.BatchNorm2d(in_chans)
        self.act1 = nn.ReLU(inplace=True)
        self.conv1 = conv1x1(in_chans, inner)
        self.bn2 = nn.BatchNorm2d(inner)
        self.act2 = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(inner, inner, stride, options.groups)
        self.bn3 = nn.BatchNorm2d(inner)
        self.act3 = nn.ReLU(inplace=True)
        self.dropout = dropout(options.block_dropout)
        self.conv3 = conv1x1(inner, out_chans)
        self.se = squeeze_excitation(out_chans, options.se_ratio)
        self.drop_path = drop_path(options.drop_path_rate)
        self.downsample = shortcut if shortcut is not None else nn.Identity()
        self.shortcut_reads_preact = stride != 1 or in_chans != out_chans

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        preact = self.act1(self.bn1(x))
        shortcut = self.downsample(preact if self.shortcut_reads_preact else x)
        out = self.act2(self.bn2(self.conv1(preact)))
        out = self.dropout(self.act3(self.bn3(self.conv2(out))))
        out = self.drop_path(self.se(self.conv3(out)))
        out += shortcut
        return out


def bottleneck_width(width: int, groups: int, width_per_group: int) -> int:
    """Channels of a bottleneck's 3x3 convolution (torchvision's formula)."""
    return int(width * (width_per_group / 64.0)) * groups


BLOCKS: dict[str, type[nn.Module]] = {
    "basic": BasicBlock,
    "bottleneck": Bottleneck,
    "preact_basic": PreActBasicBlock,
    "preact_bottleneck": PreActBottleneck,
}
