"""``python -m resnet_lab.models``: parameters and FLOPs of the named models.

    python -m resnet_lab.models                         # every named model, published input size
    python -m resnet_lab.models --input 64              # every model at 64x64
    python -m resnet_lab.models --name resnet50 --input 224   # layer-by-layer summary
"""

from __future__ import annotations

import argparse
import sys

from resnet_lab.models.registry import MODELS
from resnet_lab.models.summary import layer_summary, model_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m resnet_lab.models",
        description="Parameter counts and FLOPs of the named models (a Markdown table), or "
        "with --name the layer-by-layer summary of one. Counted on the meta device: no "
        "memory, no compute.",
    )
    parser.add_argument("--name", choices=list(MODELS), metavar="NAME",
                        help=f"one model for a layer-by-layer summary: {', '.join(MODELS)}")
    parser.add_argument("--input", type=int, default=None, metavar="PIXELS",
                        help="image height and width (default: 224 for the ImageNet family, "
                        "32 for the 3x3-stem models)")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="classifier outputs (default: 1000 ImageNet family, 10 others)")
    parser.add_argument("--in-chans", type=int, default=3, help="input channels (default 3)")
    parser.add_argument("--depth", type=int, default=2,
                        help="summary depth: 1 stages, 2 blocks, 3 layers (default 2)")
    args = parser.parse_args(argv)
    for flag in ("input", "num_classes", "in_chans", "depth"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            parser.error(f"--{flag.replace('_', '-')} must be a positive integer, got {value}")
    if args.name:
        print(layer_summary(args.name, args.input, args.num_classes, args.in_chans, args.depth))
    else:
        print(model_table(None, args.input, args.num_classes, args.in_chans))
    return 0


if __name__ == "__main__":
    sys.exit(main())
