"""Which run to continue, from which checkpoint, with which config (docs/RELIABILITY.md).

``compare``: which config differences a resume allows; ``choice``: which checkpoint;
``plan``: what a job starts from; ``hydra``: the run-directory resolvers and the guard that
runs before Hydra writes; ``job``: the config and checkpoint a training job runs with.
"""

from resnet_lab.resume.choice import newest_checkpoint
from resnet_lab.resume.compare import RUNTIME_KEYS, config_differences
from resnet_lab.resume.job import JobStart, log_notes, prepare_job
from resnet_lab.resume.plan import (
    AUTO,
    AUTO_OR_NEW,
    ResumePlan,
    clear_plans,
    plan_for_config,
    plan_resume,
)

__all__ = [
    "AUTO",
    "AUTO_OR_NEW",
    "RUNTIME_KEYS",
    "JobStart",
    "ResumePlan",
    "clear_plans",
    "config_differences",
    "log_notes",
    "newest_checkpoint",
    "plan_for_config",
    "plan_resume",
    "prepare_job",
]
