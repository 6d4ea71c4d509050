"""One run directory as the viewer sees it: its record, config, overrides and metric history.

Everything is read from files (``run.json``, ``.hydra/``, ``csv/metrics.csv`` or TensorBoard
event files), so it works offline, on copied run directories, and on runs still going. A
file that exists but cannot be read is reported in ``problems``, not taken for an empty one.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf

from resnet_lab.run_dir import (
    CONFIG_FILE,
    GROUP_DIRS,
    HYDRA_DIR,
    HYDRA_FILE,
    LOG_FILE,
    OVERRIDES_FILE,
    DamagedFile,
    Status,
    flatten,
    parse_time,
    read_record,
    status_of,
)
from resnet_lab.runs.history import Series, read_history


def load_yaml(path: Path) -> Any:
    """A YAML file's content; None when it is missing or unreadable."""
    try:
        with path.open() as handle:
            return yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (OSError, yaml.YAMLError):
        return None


_HYDRA_RESOLVER = re.compile(r"\$\{hydra:([^}]+)\}")


def _resolve(raw: Any, node: Any) -> Any:
    """``raw`` (the container as written) with each value resolved where ``node`` can."""
    if isinstance(raw, dict):
        keys = raw.keys()
    elif isinstance(raw, list):
        keys = range(len(raw))
    else:
        return raw
    out = {} if isinstance(raw, dict) else [None] * len(raw)
    for key in keys:
        try:
            value = node[key]
        except Exception:  # noqa: BLE001 - e.g. a resolver of another program: keep the text
            out[key] = raw[key]
            continue
        out[key] = _resolve(raw[key], value) if isinstance(value, (DictConfig, ListConfig)) else value
    return out


def load_saved_config(path: Path, hydra_node: dict[str, Any]) -> dict[str, Any]:
    """A saved ``.hydra/config.yaml`` with its interpolations resolved where possible.

    ``${hydra:...}`` is answered from the run's own ``.hydra/hydra.yaml`` (that resolver
    exists only inside a Hydra app); anything still unresolvable is kept as written.
    """
    text = path.read_text()
    if hydra_node:
        lookup_from = OmegaConf.create(hydra_node)

        def lookup(match: re.Match) -> str:
            found = OmegaConf.select(lookup_from, match.group(1).strip(), default=None)
            return str(found) if found is not None else match.group(0)

        text = _HYDRA_RESOLVER.sub(lookup, text)
    config = OmegaConf.create(text)
    return _resolve(OmegaConf.to_container(config, resolve=False), config)


class Run:
    """A run directory: anything with ``.hydra/config.yaml`` or ``run.json``."""

    def __init__(self, path: Path, root: Path | None = None) -> None:
        self.path = Path(path).resolve()
        self.root = root

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @property
    def id(self) -> str:
        """The path below the root, without the ``runs/``, ``multiruns/``, ``sweeps/`` level."""
        if self.root is not None:
            try:
                parts = self.path.relative_to(self.root.resolve()).parts
            except ValueError:
                parts = ()
            if parts and parts[0] in GROUP_DIRS and len(parts) > 1:
                parts = parts[1:]
            if parts:
                return "/".join(parts)
        parent = self.path.parent
        return self.path.name if parent.name in GROUP_DIRS else f"{parent.name}/{self.path.name}"

    @cached_property
    def problems(self) -> list[str]:
        """Files of this run that exist but cannot be read (filled as they are read)."""
        return []

    @cached_property
    def record(self) -> dict[str, Any]:
        try:
            return read_record(self.path)
        except DamagedFile as error:
            self.problems.append(str(error))
            return {}

    @cached_property
    def hydra(self) -> dict[str, Any]:
        loaded = load_yaml(self.path / HYDRA_DIR / HYDRA_FILE)
        return (loaded or {}).get("hydra", {}) if isinstance(loaded, dict) else {}

    @cached_property
    def overrides(self) -> list[str]:
        loaded = load_yaml(self.path / HYDRA_DIR / OVERRIDES_FILE)
        return [str(item) for item in loaded] if isinstance(loaded, list) else []

    @cached_property
    def config(self) -> dict[str, Any]:
        """The run's composed config, interpolations resolved where possible."""
        path = self.path / HYDRA_DIR / CONFIG_FILE
        if not path.is_file():
            return {}
        hydra_node = {**self.hydra, "runtime": {**self.hydra.get("runtime", {}), "output_dir": str(self.path)}}
        try:
            return load_saved_config(path, hydra_node)
        except Exception as error:  # noqa: BLE001 - damaged YAML: say so, show no config
            self.problems.append(f"{path} is damaged: {str(error).splitlines()[0] if str(error) else type(error).__name__}")
            return {}

    @cached_property
    def flat_config(self) -> dict[str, Any]:
        return flatten(self.config)

    @property
    def choices(self) -> dict[str, Any]:
        return self.hydra.get("runtime", {}).get("choices", {}) or {}

    @property
    def experiment(self) -> str:
        """The experiment config, or for a trial of a hyperparameter search that has none,
        ``hparams_search=<name>`` (what the command line chose)."""
        if self.choices.get("experiment"):
            return str(self.choices["experiment"])
        search = self.choices.get("hparams_search")
        return f"hparams_search={search}" if search else "-"

    @property
    def task(self) -> str:
        return str(self.flat_config.get("task_name") or "-")

    @property
    def tags(self) -> list[str]:
        tags = self.config.get("tags")
        return [str(tag) for tag in tags] if isinstance(tags, list) else []

    @property
    def model(self) -> str:
        return str(self.choices.get("model") or self.flat_config.get("model.name") or "-")

    @property
    def data(self) -> str:
        return str(self.choices.get("data") or "-")

    @property
    def started(self) -> datetime | None:
        stamp = parse_time(self.record.get("started"))
        if stamp is None:
            try:
                stamp = datetime.fromtimestamp((self.path / HYDRA_DIR).stat().st_mtime, timezone.utc)
            except OSError:
                return None
        return stamp

    @property
    def monitor(self) -> str:
        return self.record.get("monitor") or self.flat_config.get("optimized_metric") or "val/acc_top1"

    @property
    def metrics(self) -> dict[str, float]:
        return dict(self.record.get("metrics") or {})

    def best(self, metric: str, mode: str = "max") -> float | None:
        """The best value of ``metric`` over the run: the record's when it is the monitor,
        otherwise the extreme of the logged history."""
        best = self.record.get("best") or {}
        if metric in best and self.record.get("monitor") == metric:
            return float(best[metric])
        series = self.history.get(metric)
        if series and series.values:
            values = [v for v in series.values if not math.isnan(v)]
            if values:
                return max(values) if mode == "max" else min(values)
        value = self.metrics.get(metric)
        return float(value) if value is not None else None

    def final(self, metric: str) -> float | None:
        value = self.metrics.get(metric)
        return float(value) if value is not None else None

    @cached_property
    def status(self) -> str:
        """running, finished, failed, interrupted, pruned, or unknown (no record yet), as
        ``resnet_lab.run_dir.status_of`` derives it; ``damaged`` for an unreadable record."""
        record = self.record
        if not record:
            if self.problems:
                return "damaged"
            try:
                text = (self.path / LOG_FILE).read_text(errors="replace")
            except OSError:
                text = ""
            return Status.FAILED.value if "[ERROR]" in text else Status.UNKNOWN.value
        return status_of(record).value

    @property
    def epochs(self) -> tuple[int | None, int | None]:
        return self.record.get("epochs_done"), self.record.get("epochs_planned")

    @property
    def wall_time_s(self) -> float | None:
        value = self.record.get("wall_time_s")
        return float(value) if value is not None else None

    @cached_property
    def history(self) -> dict[str, Series]:
        return read_history(self.path)

    @cached_property
    def provenance(self) -> dict[str, Any]:
        """Git commit, package versions and device, as the loggers recorded them."""
        for name in ("csv/hparams.yaml", "tensorboard/hparams.yaml"):
            loaded = load_yaml(self.path / name)
            if isinstance(loaded, dict) and isinstance(loaded.get("provenance"), dict):
                return loaded["provenance"]
        return {}
