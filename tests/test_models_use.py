"""ResNet beyond training from scratch: TorchScript, rebuilding from a checkpoint's architecture,
and freezing for fine-tuning (model.freeze, model.freeze_bn_stats)."""

from __future__ import annotations

import warnings

import pytest
import torch
import torchvision

from resnet_lab.errors import CheckpointError, ConfigError
from resnet_lab.models import ResNet, build_model, rebuild_network

# Every block type, stem, shortcut and optional part, small.
VARIANTS = {
    "basic, cifar stem, zero-pad shortcuts": dict(block="basic", layers=[1, 1, 1], widths=[8, 16, 32],
                                                  stem="cifar", stem_width=8, downsample="zeropad"),
    "bottleneck, deep stem, avgpool, SE, drop path": dict(block="bottleneck", layers=[1, 2], widths=[8, 16],
                                                          stem="deep", stem_width=16, downsample="avgpool",
                                                          se_ratio=0.25, drop_path_rate=0.1, dropout=0.2),
    "pre-activation bottleneck, grouped": dict(block="preact_bottleneck", layers=[1, 1, 1, 1], widths=[8, 8, 16, 16],
                                               stem="imagenet", stem_width=8, groups=2, width_per_group=8),
    "plain": dict(block="basic", layers=[2, 2], widths=[8, 16], stem="cifar", stem_width=8, shortcut=False,
                  downsample="none", block_dropout=0.1),
}


def _script(model: torch.nn.Module) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.script(model)


@pytest.mark.parametrize("arguments", VARIANTS.values(), ids=VARIANTS.keys())
def test_every_variant_scripts_and_computes_the_same_logits(arguments):
    model = ResNet(**arguments, num_classes=5).eval()
    scripted = _script(model)
    images = torch.randn(3, 3, 32, 32)
    with torch.inference_mode():
        assert torch.equal(scripted(images), model(images))
    assert list(scripted.state_dict()) == list(model.state_dict())


def test_the_scripted_resnet50_keeps_torchvisions_names():
    scripted = _script(build_model("resnet50", num_classes=10))
    assert list(scripted.state_dict()) == list(torchvision.models.resnet50(num_classes=10).state_dict())


@pytest.mark.parametrize("arguments", VARIANTS.values(), ids=VARIANTS.keys())
def test_architecture_rebuilds_the_same_network(arguments):
    model = ResNet(**arguments, num_classes=5, in_chans=1).eval()
    rebuilt = rebuild_network(model.architecture).eval()
    rebuilt.load_state_dict(model.state_dict())
    images = torch.randn(2, 1, 32, 32)
    with torch.inference_mode():
        assert torch.equal(rebuilt(images), model(images))


def test_an_architecture_that_does_not_build_is_a_checkpoint_error():
    architecture = build_model("resnet20", num_classes=4).architecture
    with pytest.raises(CheckpointError, match="has colour, which ResNet does not take"):
        rebuild_network({**architecture, "colour": "red"})
    with pytest.raises(CheckpointError, match="does not build: model.block='triangle'"):
        rebuild_network({**architecture, "block": "triangle"})


def _pretrained_file(tmp_path, name="resnet18"):
    """A torchvision weights file (1,000 classes), written here: nothing is downloaded."""
    path = tmp_path / f"{name}.pth"
    torch.save(torchvision.models.get_model(name, weights=None).state_dict(), path)
    return path


def test_freeze_stops_gradients_of_the_named_stages(tmp_path):
    model = build_model("resnet18", num_classes=3, weights=str(_pretrained_file(tmp_path)), freeze=["stem", "layer1"])
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {name for name, _ in model.named_parameters() if name.split(".")[0] in ("conv1", "bn1", "layer1")}
    model.train()
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert model.layer1[0].conv1.weight.grad is None and model.layer2[0].conv1.weight.grad is not None
    assert not model.bn1.training and not model.layer1[1].bn2.training and model.layer2[0].bn1.training


def test_frozen_stages_and_statistics_do_not_change_in_training(tmp_path):
    model = build_model("resnet18", num_classes=3, weights=str(_pretrained_file(tmp_path)), freeze=["stem", "layer1"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    for _ in range(2):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 0])).backward()
        optimizer.step()
    after = model.state_dict()
    for key in before:
        unchanged = torch.equal(before[key], after[key])
        assert unchanged == (key.split(".")[0] in ("conv1", "bn1", "layer1")), key


def test_freeze_bn_stats_keeps_every_running_statistic_but_trains_the_scales(tmp_path):
    model = build_model("resnet18", num_classes=3, weights=str(_pretrained_file(tmp_path)), freeze_bn_stats=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    torch.nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 0])).backward()
    optimizer.step()
    after = model.state_dict()
    stats = [k for k in before if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert stats and all(torch.equal(before[k], after[k]) for k in stats)
    assert not torch.equal(before["layer2.0.bn1.weight"], after["layer2.0.bn1.weight"])


def test_the_last_stage_of_a_preactivation_net_takes_its_final_norm(tmp_path):
    model = ResNet(**VARIANTS["pre-activation bottleneck, grouped"], num_classes=3)
    model.freeze(["layer4"])
    assert not model.bn_final.weight.requires_grad and "bn_final" in model.frozen_norms


def test_bad_freezing_is_refused_with_a_sentence(tmp_path):
    weights = str(_pretrained_file(tmp_path))
    with pytest.raises(ConfigError, match="layer5 is not a stage of this network; its stages are stem, layer1, layer2, layer3, layer4"):
        build_model("resnet18", num_classes=3, weights=weights, freeze=["layer5"])
    with pytest.raises(ConfigError, match="must be a list of stage names"):
        build_model("resnet18", num_classes=3, weights=weights, freeze="stem")
    with pytest.raises(ConfigError, match="model.weights is null: they would stay at their random initialization"):
        build_model("resnet18", num_classes=3, freeze=["stem"])
    with pytest.raises(ConfigError, match="freeze_bn_stats=true keeps weights as loaded"):
        build_model("resnet18", num_classes=3, freeze_bn_stats=True)
