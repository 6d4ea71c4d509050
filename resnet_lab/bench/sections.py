"""Which sections run, in which order, after their names are checked."""

from __future__ import annotations

from resnet_lab.bench.results import SectionResult
from resnet_lab.bench.settings import BenchSettings
from resnet_lab.errors import ConfigError


def torchvision_comparable() -> list[str]:
    """Our named models that torchvision also has (same architecture and state-dict names)."""
    import torchvision

    from resnet_lab.models import MODELS

    theirs = set(torchvision.models.list_models(module=torchvision.models))
    return [name for name in MODELS if name in theirs]


def check_names(settings: BenchSettings) -> None:
    """Refuse unknown model names before anything is built or timed."""
    from resnet_lab.models import MODELS

    if ("train" in settings.sections or "infer" in settings.sections) and settings.model not in MODELS:
        raise ConfigError(f"--model {settings.model!r} is not a named model; choose one of {', '.join(MODELS)}.")
    if "torchvision" in settings.sections:
        allowed = torchvision_comparable()
        unknown = [name for name in settings.compare_models if name not in allowed]
        if unknown or not settings.compare_models:
            raise ConfigError(
                f"--compare-models {','.join(unknown) or '(empty)'}: the torchvision section compares "
                f"models that torchvision also has; choose from {', '.join(allowed)}."
            )


def run_sections(settings: BenchSettings) -> SectionResult:
    result = SectionResult()
    if "train" in settings.sections or "infer" in settings.sections:
        from resnet_lab.bench.lightning_vs_plain import run_model_sections

        result.extend(run_model_sections(settings))
    if "torchvision" in settings.sections:
        from resnet_lab.bench.models_vs_torchvision import compare_with_torchvision

        result.extend(compare_with_torchvision(settings))
    if "data" in settings.sections:
        from resnet_lab.bench.data_paths import compare_data_paths

        result.extend(compare_data_paths(settings))
    if "jpeg" in settings.sections:
        from resnet_lab.bench.jpeg_loaders import compare_jpeg_loaders

        result.extend(compare_jpeg_loaders(settings))
    return result
