"""Optuna distributions from Hydra's sweep syntax, and trial parameters back to overrides.

The syntax is Hydra's own (and hydra-optuna-sweeper's): ``choice(a, b)`` is categorical,
``range(lo, hi, step)`` an int or float grid (``hi`` excluded, as in Python),
``interval(lo, hi)`` uniform over floats (``int(interval(lo, hi))`` over integers),
``tag(log, interval(lo, hi))`` log-uniform. Anything else is a fixed override passed to
every trial as written.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
    Transformer,
)

from resnet_lab.errors import ConfigError

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution


def _distribution(override: Override) -> BaseDistribution:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = override.value()
    key = override.get_key_element()
    if override.is_choice_sweep() or (isinstance(value, RangeSweep) and value.shuffle):
        assert isinstance(value, (ChoiceSweep, RangeSweep))
        choices = list(override.sweep_iterator(transformer=Transformer.encode))
        return CategoricalDistribution(choices)
    if isinstance(value, RangeSweep):
        values = list(override.sweep_iterator())
        if not values or value.step is None or value.step <= 0:
            raise ConfigError(f"{key}: range({value.start}, {value.stop}, {value.step}) is empty; "
                              "use range(low, high, step) with low < high and step > 0.")
        if all(isinstance(x, int) for x in (*values, value.step)):
            return IntDistribution(values[0], values[-1], step=value.step)
        return FloatDistribution(float(values[0]), float(values[-1]), step=float(value.step))
    if isinstance(value, IntervalSweep):
        log = "log" in value.tags
        if value.start >= value.end or (log and value.start <= 0):
            raise ConfigError(
                f"{key}: interval({value.start}, {value.end}) needs low < high"
                f"{' and low > 0 for tag(log, ...)' if log else ''}."
            )
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log)
        return FloatDistribution(float(value.start), float(value.end), log=log)
    raise ConfigError(f"{override.input_line}: Optuna cannot search this sweep; use choice(), range(), "
                      "interval() or tag(log, interval()).")


def parse_search_space(overrides: Sequence[str]) -> tuple[dict[str, BaseDistribution], list[str]]:
    """Split overrides into the search space (``key -> distribution``) and fixed overrides.

    A later override of the same key wins, so the command line can change the search space
    of a config (``optimizer.lr=interval(0.01,0.1)``) or pin one of its parameters.
    """
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    space: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for override in parsed:
        key = override.get_key_element()
        space.pop(key, None)
        fixed.pop(key, None)
        if override.is_sweep_override():
            space[key] = _distribution(override)
        else:
            fixed[key] = f"{key}={override.get_value_element_as_str()}"
    return space, list(fixed.values())


def format_value(value: Any) -> str:
    """A sampled value as override text (categorical strings are already override text)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def trial_overrides(params: dict[str, Any]) -> list[str]:
    return [f"{key}={format_value(value)}" for key, value in params.items()]


def quote(text: str) -> str:
    """A string as a quoted override value (paths and URLs hold ':' and '/')."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
