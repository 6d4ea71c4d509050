"""Where the configs live, and the Hydra entry point of each command.

``conf/`` sits at the repository root in a source checkout and inside the package in a
wheel (pyproject's force-include); ``config_dir()`` finds whichever is there.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
from omegaconf import OmegaConf

from resnet_lab.errors import EXIT_USER_ERROR

_PACKAGE_DIR = Path(__file__).resolve().parent


def config_dir() -> Path:
    for candidate in (_PACKAGE_DIR / "conf", _PACKAGE_DIR.parent / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise RuntimeError(
        f"resnet_lab's configs were not found in {_PACKAGE_DIR / 'conf'} or "
        f"{_PACKAGE_DIR.parent / 'conf'}; reinstall the package."
    )


def register_resolvers(resolvers: Iterable[tuple[str, Any, bool]]) -> None:
    """Register ``(name, function, use_cache)`` resolvers; entry points call this with the
    ones their configs use."""
    for name, function, use_cache in resolvers:
        OmegaConf.register_new_resolver(name, function, replace=True, use_cache=use_cache)


def config_groups() -> tuple[str, ...]:
    """The config groups (folders of conf/)."""
    return tuple(sorted(p.name for p in config_dir().iterdir() if p.is_dir()))


def command(config_name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``hydra.main`` for one of resnet_lab's commands, reading ``conf/<config_name>.yaml``.

    A command line Hydra cannot compose (an option that is not in its group, an override it
    cannot parse) is bad input like any other: Hydra prints its message and exits 1; here
    the same message exits 2. Called with a config (as tests do), the task runs directly."""

    def decorate(task: Callable[..., Any]) -> Callable[..., Any]:
        hydra_main = hydra.main(version_base="1.3", config_path=str(config_dir()), config_name=config_name)(task)

        @functools.wraps(task)
        def main(*args: Any, **kwargs: Any) -> Any:
            if args or kwargs:
                return hydra_main(*args, **kwargs)
            with _composition_errors_exit_2():
                return hydra_main()

        return main

    return decorate


@contextmanager
def _composition_errors_exit_2() -> Iterator[None]:
    # Hydra reports through hydra._internal.utils.run_and_report, which turns every exception
    # into exit status 1; composition errors are caught inside it, before it decides.
    from hydra._internal import utils as hydra_utils
    from hydra.errors import ConfigCompositionException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    report_errors = getattr(hydra_utils, "run_and_report", None)
    if report_errors is None:  # a Hydra without it: its own exit status 1 stands
        yield
        return

    def run_and_report(func: Callable[[], Any]) -> Any:
        def composed() -> Any:
            try:
                return func()
            except (ConfigCompositionException, OverrideParseException) as error:
                if os.environ.get("HYDRA_FULL_ERROR") == "1":
                    raise
                print(error, file=sys.stderr)
                if isinstance(error.__cause__, OmegaConfBaseException):
                    print(error.__cause__, file=sys.stderr)
                raise SystemExit(EXIT_USER_ERROR) from None

        return report_errors(composed)

    hydra_utils.run_and_report = run_and_report
    try:
        yield
    finally:
        hydra_utils.run_and_report = report_errors
