"""``ResNet``: one parametrized network for every residual (and plain) architecture here.

Stem -> stages ``layer1..layerN`` -> (final norm for pre-activation nets) -> global average
pool -> dropout -> ``fc``. The ImageNet models have torchvision's state-dict names and
shapes; the deep stem and average-pool shortcut of ResNet-D and the squeeze-excitation
of SE-ResNet have timm's, so checkpoints from either load as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import nn

from resnet_lab.errors import ConfigError
from resnet_lab.models.blocks import BLOCKS, BlockOptions, bottleneck_width, conv3x3, make_shortcut

STEMS = ("imagenet", "cifar", "deep")
DOWNSAMPLES = ("projection", "avgpool", "zeropad", "none")


def make_stem(kind: str, in_chans: int, width: int) -> nn.Module:
    """The stem convolution(s), without the norm, activation and pooling that follow.

    imagenet: 7x7 stride 2 (He et al. 2015). cifar: 3x3 stride 1 (He et al. 2015,
    section 4.2). deep: three 3x3 convolutions of width/2, width/2, width, the first with
    stride 2 (ResNet-C, He et al. 2019 "Bag of Tricks"; names as timm's ``conv1.0..6``).
    """
    if kind == "imagenet":
        return nn.Conv2d(in_chans, width, 7, stride=2, padding=3, bias=False)
    if kind == "cifar":
        return conv3x3(in_chans, width)
    half = width // 2
    return nn.Sequential(
        conv3x3(in_chans, half, stride=2),
        nn.BatchNorm2d(half),
        nn.ReLU(inplace=True),
        conv3x3(half, half),
        nn.BatchNorm2d(half),
        nn.ReLU(inplace=True),
        conv3x3(half, width),
    )


def make_stages(
    block: str,
    layers: Sequence[int],
    widths: Sequence[int],
    in_chans: int,
    *,
    downsample: str,
    shortcut: bool,
    options: BlockOptions,
    drop_path_rate: float,
) -> list[nn.Sequential]:
    """Build the stages; the first keeps the resolution, each later one halves it.

    Stochastic depth grows linearly with depth: block l of L (1-based) drops its branch
    with probability ``drop_path_rate * l / L`` (Huang et al. 2016, "linear decay rule").
    """
    block_cls = BLOCKS[block]
    total = sum(layers)
    stages, index = [], 0
    for stage, (depth, width) in enumerate(zip(layers, widths)):
        out_chans = width * block_cls.expansion
        blocks = []
        for i in range(depth):
            index += 1
            stride = 2 if stage > 0 and i == 0 else 1
            blocks.append(
                block_cls(
                    in_chans,
                    width,
                    stride,
                    make_shortcut(downsample, in_chans, out_chans, stride,
                                  residual=shortcut, norm=not block_cls.preact),
                    replace(options, drop_path_rate=drop_path_rate * index / total),
                )
            )
            in_chans = out_chans
        stages.append(nn.Sequential(*blocks))
    return stages


class ResNet(nn.Module):
    """A residual network; every named model is one set of these arguments.

    Args:
        block: ``basic``, ``bottleneck``, ``preact_basic`` or ``preact_bottleneck``.
        layers: blocks per stage, e.g. (3, 4, 6, 3) for ResNet-50, (9, 9, 9) for ResNet-56.
        widths: per stage; a stage outputs ``width * expansion`` channels (4 for bottlenecks).
        stem: ``imagenet`` (7x7/2), ``cifar`` (3x3/1) or ``deep`` (three 3x3, ResNet-C).
        stem_width: channels out of the stem.
        stem_pool: 3x3 stride-2 max-pool after the stem; None: on for the imagenet and
            deep stems, off for the cifar stem.
        downsample: shortcut where a block changes shape: ``projection`` (1x1 conv,
            He et al. option B), ``avgpool`` (ResNet-D), ``zeropad`` (option A) or ``none``
            (only with ``shortcut=False``).
        shortcut: False builds the plain network of He et al. 2015 (no shortcuts at all).
        groups, width_per_group: bottleneck grouping (ResNeXt) and width (Wide ResNet).
        se_ratio: squeeze-excitation reduction, e.g. 1/16 (Hu et al. 2018); 0 is off.
        drop_path_rate: stochastic-depth rate of the last block (linear in depth).
        block_dropout: dropout between the convolutions of each residual branch (WRN).
        dropout: dropout before the classifier.
        zero_init_last: zero-initialize the last norm (pre-activation: last conv) of each
            residual branch, so every block starts as the identity (Goyal et al. 2017).
        in_chans: input channels (1 for grayscale).
        num_classes: classifier outputs.
    """

    def __init__(
        self,
        block: str,
        layers: Sequence[int],
        widths: Sequence[int] = (64, 128, 256, 512),
        *,
        stem: str = "imagenet",
        stem_width: int = 64,
        stem_pool: bool | None = None,
        downsample: str = "projection",
        shortcut: bool = True,
        groups: int = 1,
        width_per_group: int = 64,
        se_ratio: float = 0.0,
        drop_path_rate: float = 0.0,
        block_dropout: float = 0.0,
        dropout: float = 0.0,
        zero_init_last: bool = False,
        in_chans: int = 3,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        layers, widths = tuple(layers), tuple(widths)
        check_architecture(
            block=block, layers=layers, widths=widths, stem=stem, stem_width=stem_width,
            downsample=downsample, shortcut=shortcut, groups=groups,
            width_per_group=width_per_group, se_ratio=se_ratio, drop_path_rate=drop_path_rate,
            block_dropout=block_dropout, dropout=dropout, zero_init_last=zero_init_last,
            in_chans=in_chans, num_classes=num_classes,
        )
        # Everything needed to build this network again (resnet_lab.inference, and
        # ImageClassifier.load_from_checkpoint, rebuild it from a checkpoint's copy).
        self.architecture = {
            "block": block, "layers": list(layers), "widths": list(widths), "stem": stem,
            "stem_width": stem_width, "stem_pool": stem_pool, "downsample": downsample,
            "shortcut": shortcut, "groups": groups, "width_per_group": width_per_group,
            "se_ratio": float(se_ratio), "drop_path_rate": float(drop_path_rate),
            "block_dropout": float(block_dropout), "dropout": float(dropout),
            "zero_init_last": zero_init_last, "in_chans": in_chans, "num_classes": num_classes,
        }
        preact = BLOCKS[block].preact
        if stem_pool is None:
            stem_pool = stem != "cifar"
        self.num_stages = len(layers)
        self.num_features = widths[-1] * BLOCKS[block].expansion

        self.conv1 = make_stem(stem, in_chans, stem_width)
        # A pre-activation network normalizes at the start of each block instead, and
        # once more before the pool (He et al. 2016, "Identity Mappings", appendix).
        self.bn1 = nn.Identity() if preact else nn.BatchNorm2d(stem_width)
        self.act1 = nn.Identity() if preact else nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if stem_pool else nn.Identity()
        stages = make_stages(
            block, layers, widths, stem_width,
            downsample=downsample, shortcut=shortcut, drop_path_rate=drop_path_rate,
            options=BlockOptions(groups=groups, width_per_group=width_per_group, se_ratio=se_ratio,
                                 block_dropout=block_dropout),
        )
        for i, stage in enumerate(stages, start=1):
            self.add_module(f"layer{i}", stage)
        self.bn_final = nn.BatchNorm2d(self.num_features) if preact else nn.Identity()
        self.act_final = nn.ReLU(inplace=True) if preact else nn.Identity()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(self.num_features, num_classes)
        self.init_weights(zero_init_last)
        # BatchNorm layers (by name) that stay in eval mode in training: see freeze().
        self.frozen_norms: tuple[str, ...] = ()

    def init_weights(self, zero_init_last: bool = False) -> None:
        """He (fan-out) init for convolutions, unit norms; torchvision's and He et al.'s."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_last:
            for module in self.modules():
                if module is not self and hasattr(module, "zero_init_last"):
                    module.zero_init_last()

    def get_classifier(self) -> nn.Module:
        """The classifier (timm's name for this method), e.g. for a fine-tuning learning rate."""
        return self.fc

    def stage_names(self) -> list[str]:
        """What ``freeze`` takes: ``stem`` (conv1, bn1), then ``layer1`` ... ``layerN`` (the last
        with a pre-activation network's final norm)."""
        return ["stem", *(f"layer{i}" for i in range(1, self.num_stages + 1))]

    def freeze(self, stages: Sequence[str] = (), *, bn_stats: bool = False) -> None:
        """Stop training ``stages`` (names of ``stage_names()``): their weights get no
        gradient and their BatchNorm statistics stay as loaded. ``bn_stats``: every BatchNorm
        keeps its running statistics (normalizes with them in training too) while its scale
        and shift still train, as detection and fine-tuning recipes do with small batches."""
        allowed = self.stage_names()
        unknown = [name for name in stages if name not in allowed]
        if unknown:
            raise ConfigError(
                f"model.freeze={list(stages)}: {', '.join(map(str, unknown))} is not a stage of this "
                f"network; its stages are {', '.join(allowed)} (the classifier fc always trains)."
            )
        owners = {"stem": ("conv1", "bn1"), f"layer{self.num_stages}": (f"layer{self.num_stages}", "bn_final")}
        frozen = [prefix for name in stages for prefix in owners.get(name, (name,))]
        for name, parameter in self.named_parameters():
            if name.split(".")[0] in frozen:
                parameter.requires_grad_(False)
        self.frozen_norms = tuple(
            name for name, module in self.named_modules()
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and (bn_stats or name.split(".")[0] in frozen)
        )
        self.train(self.training)

    def train(self, mode: bool = True) -> ResNet:
        super().train(mode)
        for name in self.frozen_norms:
            self.get_submodule(name).eval()
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        # Over the children rather than getattr(self, f"layer{i}"): torch.jit.script unrolls
        # this loop (it refuses a getattr whose name is not a literal).
        for name, child in self.named_children():
            if name.startswith("layer"):
                x = child(x)
        return self.act_final(self.bn_final(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(self.forward_features(x)), 1)
        return self.fc(self.dropout(x))


def _choice(field: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ConfigError(
            f"model.{field}={value!r} is not a {field}. Allowed: {', '.join(allowed)}."
        )


def _rate(field: str, value: float) -> None:
    if not 0 <= value < 1:
        raise ConfigError(f"model.{field}={value} must be in [0, 1); 0 turns it off.")


def check_architecture(
    *, block, layers, widths, stem, stem_width, downsample, shortcut, groups,
    width_per_group, se_ratio, drop_path_rate, block_dropout, dropout, zero_init_last,
    in_chans, num_classes,
) -> None:
    """Reject argument combinations that cannot build a working network, saying why."""
    _choice("block", block, tuple(BLOCKS))
    _choice("stem", stem, STEMS)
    _choice("downsample", downsample, DOWNSAMPLES)
    if not layers or len(layers) != len(widths):
        raise ConfigError(
            f"model.layers={list(layers)} and model.widths={list(widths)} must be non-empty and "
            "of the same length (one entry per stage), e.g. layers=[2,2,2,2] widths=[64,128,256,512]."
        )
    for field, values in (("layers", layers), ("widths", widths)):
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
            raise ConfigError(f"model.{field}={list(values)} must be positive integers.")
    for field, value in (("stem_width", stem_width), ("groups", groups),
                         ("width_per_group", width_per_group), ("in_chans", in_chans),
                         ("num_classes", num_classes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"model.{field}={value!r} must be a positive integer.")
    if stem == "deep" and stem_width < 2:
        raise ConfigError(
            f"model.stem=deep needs model.stem_width >= 2 (its first convolutions have "
            f"stem_width / 2 channels); got {stem_width}. ResNet-D uses 64."
        )
    for field, value in (("drop_path_rate", drop_path_rate), ("block_dropout", block_dropout),
                         ("dropout", dropout)):
        _rate(field, value)
    if not 0 <= se_ratio <= 1:
        raise ConfigError(
            f"model.se_ratio={se_ratio} must be in [0, 1] (squeeze channels / channels); "
            "0 turns squeeze-excitation off, Hu et al. use 0.0625 (1/16)."
        )
    block_cls = BLOCKS[block]
    if block_cls.expansion == 1 and (groups != 1 or width_per_group != 64):
        raise ConfigError(
            f"model.block={block} has no bottleneck to group or widen, so it needs groups=1 "
            f"and width_per_group=64 (got {groups} and {width_per_group}). Use a bottleneck "
            "block for ResNeXt and wide bottlenecks, or model.widths to widen basic blocks."
        )
    if block_cls.expansion > 1 and min(bottleneck_width(w, groups, width_per_group) for w in widths) < 1:
        raise ConfigError(
            f"model.width_per_group={width_per_group} leaves a bottleneck with no channels at "
            f"widths={list(widths)}: the inner width is int(width * width_per_group / 64) * groups."
        )
    if not shortcut:
        for field, value, fix in (
            ("downsample", downsample != "none", "downsample=none"),
            ("zero_init_last", zero_init_last, "zero_init_last=false"),
            ("drop_path_rate", drop_path_rate > 0, "drop_path_rate=0"),
        ):
            if value:
                raise ConfigError(
                    f"model.shortcut=false builds a plain network, where model.{field} cannot "
                    f"work (there is no shortcut to downsample, and a zeroed or dropped branch "
                    f"would cut the signal). Set model.{fix}, or model.shortcut=true."
                )
        return
    in_chans_stage = stem_width
    for stage, width in enumerate(widths):
        out_chans = width * block_cls.expansion
        changes_shape = stage > 0 or in_chans_stage != out_chans
        if changes_shape and downsample == "none":
            raise ConfigError(
                f"model.downsample=none leaves no shortcut where stage {stage + 1} changes shape "
                f"({in_chans_stage} -> {out_chans} channels{', stride 2' if stage else ''}). "
                "Choose projection, avgpool or zeropad, or model.shortcut=false for a plain network."
            )
        if downsample == "zeropad" and out_chans < in_chans_stage:
            raise ConfigError(
                f"model.downsample=zeropad can only add channels, but stage {stage + 1} goes from "
                f"{in_chans_stage} to {out_chans}. Use projection or avgpool, or widths that grow."
            )
        in_chans_stage = out_chans
