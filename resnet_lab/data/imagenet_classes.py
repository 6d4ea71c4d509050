"""ImageNet class identifiers (WordNet ids), their names, and the named class subsets.

``imagenet_classes.tsv`` lists the 1,000 ILSVRC-2012 wnids in sorted order (the order of
class indices in torchvision's and timm's ImageNet models) with torchvision's short name of
each class (``torchvision.models._meta._IMAGENET_CATEGORIES``).
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from resnet_lab.errors import ConfigError, DataError

WNID = re.compile(r"n\d{8}")

# fast.ai's Imagenette and Imagewoof (github.com/fastai/imagenette): ten easy classes and ten
# dog breeds. Imagenette's wnids are torchvision's (datasets.Imagenette), Imagewoof's TFDS's.
IMAGENETTE = (
    "n01440764", "n02102040", "n02979186", "n03000684", "n03028079",
    "n03394916", "n03417042", "n03425413", "n03445777", "n03888257",
)  # fmt: skip
IMAGEWOOF = (
    "n02086240", "n02087394", "n02088364", "n02089973", "n02093754",
    "n02096294", "n02099601", "n02105641", "n02111889", "n02115641",
)  # fmt: skip
# ImageNet-100 of Tian, Krishnan & Isola, "Contrastive Multiview Coding" (2019), as listed in
# github.com/HobbitLong/CMC/imagenet100.txt.
IMAGENET100 = (
    "n02869837", "n01749939", "n02488291", "n02107142", "n13037406", "n02091831", "n04517823",
    "n04589890", "n03062245", "n01773797", "n01735189", "n07831146", "n07753275", "n03085013",
    "n04485082", "n02105505", "n01983481", "n02788148", "n03530642", "n04435653", "n02086910",
    "n02859443", "n13040303", "n03594734", "n02085620", "n02099849", "n01558993", "n04493381",
    "n02109047", "n04111531", "n02877765", "n04429376", "n02009229", "n01978455", "n02106550",
    "n01820546", "n01692333", "n07714571", "n02974003", "n02114855", "n03785016", "n03764736",
    "n03775546", "n02087046", "n07836838", "n04099969", "n04592741", "n03891251", "n02701002",
    "n03379051", "n02259212", "n07715103", "n03947888", "n04026417", "n02326432", "n03637318",
    "n01980166", "n02113799", "n02086240", "n03903868", "n02483362", "n04127249", "n02089973",
    "n03017168", "n02093428", "n02804414", "n02396427", "n04418357", "n02172182", "n01729322",
    "n02113978", "n03787032", "n02089867", "n02119022", "n03777754", "n04238763", "n02231487",
    "n03032252", "n02138441", "n02104029", "n03837869", "n03494278", "n04136333", "n03794056",
    "n03492542", "n02018207", "n04067472", "n03930630", "n03584829", "n02123045", "n04229816",
    "n02100583", "n03642806", "n04336792", "n03259280", "n02116738", "n02108089", "n03424325",
    "n01855672", "n02090622",
)  # fmt: skip
NAMED_SUBSETS: dict[str, tuple[str, ...]] = {
    "imagenette": IMAGENETTE,
    "imagewoof": IMAGEWOOF,
    "imagenet100": IMAGENET100,
}


@cache
def imagenet_class_names() -> dict[str, str]:
    """{wnid: short class name} of the 1,000 ILSVRC-2012 classes."""
    table = Path(__file__).with_name("imagenet_classes.tsv").read_text().splitlines()
    return dict(line.split("\t", 1) for line in table)


def class_name(wnid: str) -> str:
    return imagenet_class_names().get(wnid, wnid)


def read_wnid_list(path: Path) -> tuple[str, ...]:
    """The wnids of a subset file: one per line; blank lines and ``#`` comments ignored."""
    if not path.is_file():
        raise ConfigError(
            f"data.subset={str(path)!r} is neither a named subset ({', '.join(NAMED_SUBSETS)}) nor "
            "a file of wnids. Name one of those, give the path of a file with one wnid per line, "
            "or set data.subset=null to take the first data.num_classes classes."
        )
    wnids: list[str] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        wnid = line.split("#", 1)[0].strip()
        if not wnid:
            continue
        if not WNID.fullmatch(wnid):
            raise DataError(
                f"{path}, line {number}: {wnid!r} is not a WordNet id (n followed by 8 digits, "
                "e.g. n01440764). Fix or remove that line."
            )
        if wnid in wnids:
            raise DataError(f"{path}, line {number}: {wnid} is listed twice. Remove one of the lines.")
        wnids.append(wnid)
    if not wnids:
        raise DataError(f"{path} lists no wnids. Add one per line (e.g. n01440764).")
    return tuple(wnids)


def resolve_subset(subset: str | None) -> tuple[tuple[str, ...] | None, str]:
    """The wnids of ``subset`` (None: the first N classes of the tree) and where they came from."""
    if subset is None:
        return None, "the first data.num_classes classes"
    if subset in NAMED_SUBSETS:
        return NAMED_SUBSETS[subset], f"the named subset {subset}"
    path = Path(subset).expanduser()
    return read_wnid_list(path), str(path)
