"""The model family: every named model runs, trains, saves and loads; parameter counts and
outputs match the published architectures (torchvision, timm, He et al., Zagoruyko and
Komodakis); configs compose with Hydra; bad input is one clear error."""

from __future__ import annotations

import copy
import functools
import logging
import shutil

import pytest
import torch
import torchvision
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from resnet_lab.configs import config_dir
from resnet_lab.errors import CheckpointError, ConfigError
from resnet_lab.models import (
    MODELS,
    OPTIONS,
    ResNet,
    build_model,
    list_models,
    model_arguments,
)
from resnet_lab.models.__main__ import main as models_cli
from resnet_lab.models.summary import (
    build_on_meta,
    count_parameters,
    model_table,
    published_setting,
)

MODEL_CONF = config_dir() / "model"
# Every named model, in two forms. The fast suite builds each entry at two blocks per stage
# (its own block, widths, stem, shortcuts, groups and SE: everything but how often a stage
# repeats its second block), so the whole registry runs in seconds on a CPU; the slow suite
# builds the full depth. Parameter counts and state-dict layouts are always checked at full
# depth, on the meta device.


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tensors here are tiny: a second intra-op thread gains nothing, and on a shared
    CPU its spin-waiting costs more (measured on 2 busy cores: forward + backward of the
    shallow wide_resnet50_2, 0.9 s with one thread, 2.4-4.8 s with two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def shallow_arguments(name: str) -> dict:
    return {**MODELS[name], "layers": tuple(min(n, 2) for n in MODELS[name]["layers"])}


def _shallow_cases() -> list:
    """One case per distinct shallow network (resnet20 ... resnet1202 are one at depth 2)."""
    groups: dict[str, list[str]] = {}
    for name in MODELS:
        groups.setdefault(repr(sorted(shallow_arguments(name).items())), []).append(name)
    return [pytest.param(names[0], True, id="+".join(names) + "-shallow") for names in groups.values()]


REGISTRY = [
    *_shallow_cases(),
    *(pytest.param(name, False, id=name, marks=pytest.mark.slow) for name in MODELS),
]
TORCHVISION = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
               "resnext101_32x8d", "wide_resnet50_2", "wide_resnet101_2"]
# Published parameter counts in millions, with the decimals the source prints.
PUBLISHED_MILLIONS = {
    # He et al. 2015, "Deep Residual Learning", Table 6 (CIFAR-10).
    "resnet20": 0.27, "resnet32": 0.46, "resnet44": 0.66, "resnet56": 0.85,
    "resnet110": 1.7, "resnet1202": 19.4,
    # The plain nets of Fig. 6 have the same layers, so the same count (option A adds none).
    "plain20": 0.27, "plain56": 0.85, "plain110": 1.7,
    # He et al. 2016, "Identity Mappings", Tables 2 and 3 (CIFAR-10).
    "preact_resnet110": 1.7, "preact_resnet164": 1.7,
    # Zagoruyko and Komodakis 2016, "Wide Residual Networks", Tables 4 and 5.
    "wrn_28_10": 36.5, "wrn_40_4": 8.9, "wrn_16_8": 11.0,
}


def image_size(name: str) -> int:
    """Small inputs: 16 x 16 leaves a 3x3-stem model's last stage at 4 x 4, 32 x 32 an
    ImageNet-stem model's at 1 x 1."""
    return 16 if MODELS[name]["stem"] == "cifar" else 32


@functools.cache
def _built(name: str, shallow: bool, num_classes: int) -> nn.Module:
    torch.manual_seed(0)
    layers = shallow_arguments(name)["layers"] if shallow else None
    return build_model(name, num_classes=num_classes, layers=layers)


def fresh(name: str, shallow: bool = True, num_classes: int = 7) -> nn.Module:
    """A new copy of a named model (deep-copied: building the big ones costs seconds)."""
    return copy.deepcopy(_built(name, shallow, num_classes))


def _stages(model: nn.Module) -> list[nn.Sequential]:
    return [getattr(model, f"layer{i}") for i in range(1, model.num_stages + 1)]


def randomize_norms(model: nn.Module) -> nn.Module:
    """Non-trivial batch-norm statistics and affine parameters, so that a mismatch in any
    of them changes the output (zero-initialized last norms would hide whole branches)."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            for tensor, low, high in ((module.weight.data, 0.5, 1.5), (module.bias.data, -0.2, 0.2),
                                      (module.running_mean, -0.2, 0.2), (module.running_var, 0.5, 1.5)):
                tensor.copy_(torch.empty_like(tensor).uniform_(low, high, generator=generator))
    return model.eval()


# -- every named model -----------------------------------------------------------------


def test_registry_is_the_issue_list_and_every_name_has_a_config():
    expected = {
        "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
        "resnext101_32x8d", "wide_resnet50_2", "wide_resnet101_2", "resnet50d", "se_resnet50",
        "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet1202", "plain20",
        "plain56", "plain110", "preact_resnet110", "preact_resnet164", "wrn_28_10", "wrn_40_4", "wrn_16_8",
        "resnet18_cifar", "resnet34_cifar", "resnet50_cifar",
    }
    assert set(list_models()) == expected
    configs = {path.stem for path in MODEL_CONF.glob("*.yaml")}
    assert configs == expected | {"custom"}


@pytest.mark.parametrize(("name", "shallow"), REGISTRY)
def test_forward_backward_every_parameter_gets_a_gradient(name, shallow):
    model = fresh(name, shallow).train()
    out = model(torch.randn(2, 3, image_size(name), image_size(name)))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    out.logsumexp(dim=1).mean().backward()
    no_grad = [key for key, p in model.named_parameters()
               if p.grad is None or not torch.isfinite(p.grad).all() or not p.grad.any()]
    assert not no_grad, f"parameters without a gradient: {no_grad[:10]}"


@pytest.mark.parametrize(("name", "shallow"), REGISTRY)
def test_state_dict_round_trip_through_a_file(name, shallow, tmp_path):
    source = randomize_norms(fresh(name, shallow))
    torch.save(source.state_dict(), tmp_path / "weights.pth")
    torch.manual_seed(123)  # a different initialization, overwritten by the file
    loaded = build_model(name, num_classes=7, weights=str(tmp_path / "weights.pth"),
                         layers=[len(stage) for stage in _stages(source)]).eval()
    x = torch.randn(2, 3, image_size(name), image_size(name))
    with torch.no_grad():
        # equal_nan: 1,202 layers of randomized norms overflow; the copy must still be bitwise.
        torch.testing.assert_close(loaded(x), source(x), rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize(("name", "shallow"), REGISTRY)
def test_channels_last_output_equals_nchw(name, shallow):
    model = randomize_norms(fresh(name, shallow))
    x = torch.randn(2, 3, image_size(name), image_size(name))
    with torch.no_grad():
        expected = model(x)
        model.to(memory_format=torch.channels_last)
        stage_outputs = []
        hooks = [stage.register_forward_hook(lambda _m, _i, out: stage_outputs.append(out))
                 for stage in _stages(model)]
        out = model(x.contiguous(memory_format=torch.channels_last))
    for hook in hooks:
        hook.remove()
    # No layer falls back to NCHW (a silent copy per layer on a GPU).
    assert all(t.is_contiguous(memory_format=torch.channels_last) for t in stage_outputs)
    if not torch.isfinite(expected).all():
        pytest.skip(f"{name}: randomized norms overflow at this depth; layout checked above")
    scale = expected.abs().max().item()
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5 * max(scale, 1.0))


def test_grayscale_input_and_class_count():
    model = build_model("resnet20", num_classes=3, in_chans=1)
    assert model.conv1.weight.shape == (16, 1, 3, 3)
    assert model(torch.randn(2, 1, 16, 16)).shape == (2, 3)


# -- fidelity: parameter counts, names, outputs ------------------------------------------


@pytest.mark.parametrize("name", list(PUBLISHED_MILLIONS))
def test_parameter_count_matches_the_paper(name):
    num_classes, _ = published_setting(name)
    count = count_parameters(build_on_meta(name, num_classes=num_classes))
    published = PUBLISHED_MILLIONS[name]
    decimals = len(str(published).split(".")[1])
    assert round(count / 1e6, decimals) == published, f"{name}: {count:,} parameters"


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_names_shapes_and_counts(name):
    with torch.device("meta"):
        reference = getattr(torchvision.models, name)().state_dict()
    ours = build_on_meta(name, num_classes=1000).state_dict()
    assert list(ours) == list(reference)
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in reference.items()}
    assert count_parameters(build_on_meta(name, num_classes=1000)) == sum(
        v.numel() for k, v in reference.items() if not k.endswith(("running_mean", "running_var",
                                                                   "num_batches_tracked")))


def test_small_image_variants_differ_from_torchvision_only_in_the_stem():
    with torch.device("meta"):
        reference = torchvision.models.resnet18(num_classes=10)
    ours = build_on_meta("resnet18_cifar", num_classes=10)
    stem_difference = 3 * 64 * (7 * 7 - 3 * 3)
    assert count_parameters(ours) == count_parameters(reference) - stem_difference
    assert isinstance(ours.maxpool, nn.Identity) and ours.conv1.stride == (1, 1)


@pytest.mark.parametrize(
    "name",
    # Basic, bottleneck and grouped bottleneck blocks in the fast suite; the rest are the
    # same code at other depths and widths.
    ["resnet18", "resnet50", "resnext50_32x4d",
     *(pytest.param(n, marks=pytest.mark.slow) for n in TORCHVISION
       if n not in ("resnet18", "resnet50", "resnext50_32x4d"))],
)
def test_torchvision_checkpoint_gives_torchvision_outputs(name, tmp_path):
    torch.manual_seed(0)
    reference = randomize_norms(getattr(torchvision.models, name)())
    torch.save(reference.state_dict(), tmp_path / f"{name}.pth")
    ours = build_model(name, num_classes=1000, weights=str(tmp_path / f"{name}.pth")).eval()
    # A strict load of the same file into our module: names and shapes are torchvision's.
    ours.load_state_dict(torch.load(tmp_path / f"{name}.pth", weights_only=True), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_training_step_gives_torchvision_gradients(name):
    """Train mode, forward and backward: the same loss and the same gradient for every
    parameter as torchvision's model with the same weights (the blocks add the shortcut in
    place, as torchvision does; nothing the backward pass needs may be overwritten)."""
    torch.manual_seed(0)
    reference = randomize_norms(getattr(torchvision.models, name)(num_classes=10)).train()
    ours = build_model(name, num_classes=10).train()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(4, 3, 32, 32)
    target = torch.tensor([0, 3, 5, 9])
    losses = [nn.functional.cross_entropy(model(x), target) for model in (ours, reference)]
    for loss in losses:
        loss.backward()
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-6)
    theirs = dict(reference.named_parameters())
    for key, parameter in ours.named_parameters():
        torch.testing.assert_close(parameter.grad, theirs[key].grad, rtol=1e-4, atol=1e-6, msg=key)


TIMM_CASES = [
    ("resnet50d", "resnet50d", {}),
    ("seresnet50", "se_resnet50", {}),
    # Basic blocks: timm rounds the SE width up to 8 (64 / 16 = 4 -> 8); ours must too.
    ("seresnet18", "resnet18", {"se_ratio": 1 / 16}),
]


@pytest.mark.parametrize(
    ("timm_name", "name", "options", "layers"),
    [
        # At two blocks per stage in the fast suite (timm takes `layers` too), in full when slow.
        *(pytest.param(*case, [2, 2, 2, 2], id=f"{case[0]}-shallow") for case in TIMM_CASES),
        *(pytest.param(*case, None, id=case[0], marks=pytest.mark.slow) for case in TIMM_CASES),
    ],
)
def test_timm_checkpoint_gives_timm_outputs(timm_name, name, options, layers, tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    reference = timm.create_model(timm_name, pretrained=False, **({"layers": layers} if layers else {}))
    randomize_norms(reference)
    torch.save(reference.state_dict(), tmp_path / f"{timm_name}.pth")
    ours = build_model(name, num_classes=1000, weights=str(tmp_path / f"{timm_name}.pth"),
                       layers=layers, **options).eval()
    assert count_parameters(ours) == count_parameters(reference)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-5, atol=1e-5)


def test_timm_parameter_counts():
    timm = pytest.importorskip("timm")
    for timm_name, name in (("resnet50d", "resnet50d"), ("seresnet50", "se_resnet50")):
        with torch.device("meta"):
            reference = timm.create_model(timm_name, pretrained=False)
        ours = build_on_meta(name, num_classes=1000)
        assert count_parameters(ours) == count_parameters(reference)
        assert [(k, v.shape) for k, v in ours.state_dict().items()] == [
            (k, v.shape) for k, v in reference.state_dict().items()]


# -- weights: fine-tuning, checkpoints, errors -------------------------------------------


def test_fine_tuning_reinitializes_only_the_classifier(tmp_path, caplog):
    source = randomize_norms(fresh("resnet20", shallow=False, num_classes=10))
    torch.save(source.state_dict(), tmp_path / "cifar10.pth")
    with caplog.at_level(logging.WARNING, logger="resnet_lab.models.weights"):
        tuned = build_model("resnet20", num_classes=5, weights=str(tmp_path / "cifar10.pth"))
    assert "10 classes" in caplog.text and "re-initialized" in caplog.text
    assert tuned.fc.weight.shape == (5, 64)
    tuned_state = tuned.state_dict()
    for key, value in source.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(tuned_state[key], value), key


def test_lightning_checkpoint_of_a_compiled_net_loads(tmp_path):
    L = pytest.importorskip("lightning")
    from resnet_lab.module import ImageClassifier

    net = randomize_norms(fresh("resnet20", shallow=False, num_classes=10))
    module = ImageClassifier(torch.compile(net), functools.partial(torch.optim.SGD, lr=0.1),
                             num_classes=10)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", devices=1)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    keys = torch.load(tmp_path / "last.ckpt", weights_only=True)["state_dict"]
    assert any(key.startswith("net._orig_mod.") for key in keys)
    loaded = build_model("resnet20", num_classes=10, weights=str(tmp_path / "last.ckpt")).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x), rtol=0, atol=0)


def test_checkpoint_of_another_architecture_lists_every_difference(tmp_path):
    torch.save(fresh("resnet20", shallow=False).state_dict(), tmp_path / "resnet20.pth")
    with pytest.raises(CheckpointError) as error:
        build_model("resnet32", num_classes=7, in_chans=1, weights=str(tmp_path / "resnet20.pth"))
    message = str(error.value)
    assert "layer1.3.conv1.weight (16, 16, 3, 3)" in message  # in resnet32, not resnet20
    assert "conv1.weight (16, 3, 3, 3) vs (16, 1, 3, 3)" in message  # in_chans differs


def test_checkpoint_with_extra_parameters_is_refused(tmp_path):
    se_net = build_model("resnet20", num_classes=7, se_ratio=0.25)
    torch.save(se_net.state_dict(), tmp_path / "se.pth")
    # 9 blocks x (se.fc1, se.fc2) x (weight, bias)
    with pytest.raises(CheckpointError, match=r"in the checkpoint, not in the model \(36\)"):
        build_model("resnet20", num_classes=7, weights=str(tmp_path / "se.pth"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "model.weights '.*weights.pth' does not exist"),
        (b"not a checkpoint", "is not a PyTorch checkpoint"),
        # The real reason, naming what the pickle would import (torch's wording changed over
        # versions; this once came out as "not a PyTorch file").
        ("module", "refused: loading it would import and call torch.nn.modules.linear.Linear"),
        ({"epoch": 3}, "contains no network weights"),
    ],
)
def test_unreadable_weights_are_one_clear_error(tmp_path, content, message):
    path = tmp_path / "weights.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "module":
        torch.save(nn.Linear(2, 2), path)  # a pickled module, not a state dict
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(CheckpointError, match=message):
        build_model("resnet20", num_classes=10, weights=str(path))


# -- options ---------------------------------------------------------------------------


def test_zero_init_last_makes_every_identity_block_the_identity():
    for name in ("resnet20", "preact_resnet164", "resnet50d"):
        model = build_model(name, num_classes=7, zero_init_last=True,
                            layers=[2] * len(MODELS[name]["layers"])).eval()
        x = torch.relu(torch.randn(2, model.layer2[1].conv1.in_channels, 8, 8))
        with torch.no_grad():
            torch.testing.assert_close(model.layer2[1](x), x, rtol=0, atol=0)


def test_stochastic_depth_is_linear_in_depth_and_only_in_training():
    model = build_model("resnet20", num_classes=7, drop_path_rate=0.3)
    rates = [block.drop_path.p for stage in (model.layer1, model.layer2, model.layer3)
             for block in stage]
    assert rates == pytest.approx([0.3 * i / 9 for i in range(1, 10)])
    x = torch.randn(8, 3, 16, 16)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    torch.manual_seed(0)
    assert not torch.equal(model(x), model(x))


def test_dropout_options_place_dropout_layers():
    model = build_model("wrn_16_8", num_classes=7, block_dropout=0.3, dropout=0.2,
                        widths=[16, 32, 64])
    assert model.dropout.p == 0.2
    assert all(block.dropout.p == 0.3 for stage in (model.layer1, model.layer2, model.layer3)
               for block in stage)


def test_custom_options_override_the_named_entry():
    model = build_on_meta("resnet50", num_classes=7, stem="deep", downsample="avgpool",
                          se_ratio=None, layers=[1, 1, 1, 1])
    reference = build_on_meta("resnet50d", num_classes=7, layers=[1, 1, 1, 1])
    assert list(model.state_dict()) == list(reference.state_dict())
    model = build_model(None, num_classes=2, block="basic", layers=[1, 1], widths=[32, 128])
    assert model.fc.in_features == 128 and model.layer2[0].conv1.stride == (2, 2)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"block": "dense"}, "model.block='dense' is not a block"),
        ({"stem": "tiny"}, "model.stem='tiny' is not a stem"),
        ({"downsample": "maxpool"}, "model.downsample='maxpool' is not a downsample"),
        ({"layers": [3, 3], "widths": [16, 32, 64]}, "one entry per stage"),
        ({"layers": [3, 0, 3]}, "must be positive integers"),
        ({"groups": 32}, "has no bottleneck to group or widen"),
        ({"block": "bottleneck", "width_per_group": 1}, "leaves a bottleneck with no channels"),
        ({"shortcut": False}, "model.downsample cannot work"),
        ({"shortcut": False, "downsample": "none", "zero_init_last": True},
         "model.zero_init_last cannot work"),
        ({"shortcut": False, "downsample": "none", "drop_path_rate": 0.1},
         "model.drop_path_rate cannot work"),
        ({"downsample": "none"}, "leaves no shortcut where stage 2 changes shape"),
        ({"widths": [64, 32, 16], "stem_width": 64}, "zeropad can only add channels"),
        ({"drop_path_rate": 1.0}, r"must be in \[0, 1\)"),
        ({"dropout": -0.1}, r"model.dropout=-0.1 must be in \[0, 1\)"),
        ({"se_ratio": 2.0}, "model.se_ratio=2.0 must be in"),
        ({"stem": "deep", "stem_width": 1}, "stem_width >= 2"),
        ({"stem_width": 0}, "model.stem_width=0 must be a positive integer"),
        ({"depth": 20}, "model.depth is not a model option"),
    ],
)
def test_impossible_combinations_say_why(options, message):
    with pytest.raises(ConfigError, match=message) as error:
        build_model("resnet20", num_classes=10, **options)
    assert isinstance(error.value, ValueError)


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("resnet9000", {}, "is not a named model"),
        (None, {"widths": [16, 32]}, "model.block and model.layers must be given"),
        ("resnet20", {"num_classes": 0}, "model.num_classes=0 must be a positive integer"),
    ],
)
def test_build_model_errors(name, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        build_model(name, **{"num_classes": 10, **kwargs})


# -- configs ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose_model(tmp_path_factory):
    """Compose a tiny primary config (data fields + the model group) with Hydra's API."""
    root = tmp_path_factory.mktemp("conf")
    shutil.copytree(MODEL_CONF, root / "model")
    (root / "tiny.yaml").write_text(
        "defaults:\n  - model: resnet20\n  - _self_\n"
        "data:\n  num_classes: 10\n  in_chans: 3\n  image_size: 32\n"
    )

    def compose_with(*overrides: str):
        with initialize_config_dir(version_base="1.3", config_dir=str(root), job_name="test"):
            return compose(config_name="tiny", overrides=list(overrides))

    return compose_with


@pytest.mark.parametrize("name", [*MODELS, "custom"])
def test_every_model_config_composes_to_its_registry_entry(compose_model, name):
    cfg = compose_model(f"model={name}")
    fields = {"_target_", "_convert_", "name", "num_classes", "in_chans", "weights", "freeze",
              "freeze_bn_stats", *OPTIONS}
    assert set(cfg.model) == fields
    assert cfg.model._target_ == "resnet_lab.models.build_model"
    assert cfg.model.name == (None if name == "custom" else name)
    assert cfg.model.weights is None and cfg.model.num_classes == 10 and cfg.model.in_chans == 3
    options = {key: cfg.model[key] for key in OPTIONS}
    arguments = model_arguments(cfg.model.name, **OmegaConf.to_container(OmegaConf.create(options)))
    if name == "custom":  # every field set: ResNet-18 for small images
        with torch.device("meta"):
            model = instantiate(cfg.model)
        expected = build_on_meta("resnet18_cifar", num_classes=10)
        assert [(k, v.shape) for k, v in model.state_dict().items()] == [
            (k, v.shape) for k, v in expected.state_dict().items()]
    else:
        assert arguments == MODELS[name]


def test_every_field_overrides_without_plus(compose_model):
    cfg = compose_model(
        "model=resnet20", "model.drop_path_rate=0.1", "model.zero_init_last=true",
        "model.layers=[1,1,1]", "model.widths=[8,16,32]", "model.se_ratio=0.25",
        "model.dropout=0.5", "model.stem_width=8", "data.in_chans=1", "data.num_classes=4",
    )
    model = instantiate(cfg.model)
    assert isinstance(model, ResNet) and model.conv1.in_channels == 1 and model.fc.out_features == 4
    assert len(model.layer1) == 1 and model.layer3[0].conv2.out_channels == 32
    assert model.layer3[0].drop_path.p == pytest.approx(0.1) and model.dropout.p == 0.5
    assert not model.layer1[0].bn2.weight.any()  # zero_init_last
    assert model(torch.randn(2, 1, 16, 16)).shape == (2, 4)


def test_base_options_and_custom_list_every_resnet_argument():
    base = OmegaConf.load(MODEL_CONF / "base" / "options.yaml")
    custom = OmegaConf.load(MODEL_CONF / "custom.yaml")
    assert set(base) == set(custom)
    assert set(OPTIONS) <= set(base)
    assert all(base[key] is None for key in OPTIONS)


# -- command line and compile -----------------------------------------------------------


def test_table_counts_match_torchvision_docs():
    table = model_table(["resnet50", "resnet20"])
    # torchvision's docs: ResNet50_Weights 25,557,032 params, 4.09 "GFLOPS" (multiply-adds).
    assert "| resnet50 | 224 | 1000 | 25,557,032 | 4.089 | 8.178 |" in table
    assert "| resnet20 | 32 | 10 | 269,722 |" in table


def test_layer_summary_command(capsys):
    assert models_cli(["--name", "resnet20", "--input", "32"]) == 0
    out = capsys.readouterr().out
    assert "resnet20: 269,722 parameters" in out
    assert "| layer3 | Sequential | 64x8x8 |" in out
    assert "| fc | Linear | 10 | 650 |" in out


def test_compile_traces_without_graph_breaks():
    model = build_model("resnet20", num_classes=7, layers=[1, 1, 1]).train()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    x = torch.randn(2, 3, 16, 16)
    compiled(x).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model(x).sum().backward()
    for compiled_grad, p in zip(grads, model.parameters()):
        torch.testing.assert_close(compiled_grad, p.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "shallow"), _shallow_cases())
def test_every_model_compiles_with_inductor(name, shallow):
    # Dynamo unrolls the blocks, so the full depth would only repeat the same graphs at a
    # compile time of minutes per model on a CPU; two blocks per stage cover every code path.
    # Each test compiles a new model whose blocks share code objects with the last test's:
    # without a reset, Dynamo's recompile limit (8) is reached part-way through the registry.
    torch._dynamo.reset()
    model = randomize_norms(fresh(name, shallow))
    x = torch.randn(2, 3, image_size(name), image_size(name))
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-3, atol=1e-3)
