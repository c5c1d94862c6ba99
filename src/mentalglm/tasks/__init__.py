"""Task specs (one per task, registered by name) and the label parser."""

from . import cimhi, imhi, pathway  # noqa: F401  (registers the specs)
from .parser import FALLBACK, INVALID, OK, Parsed, parse_answer
from .spec import Label, TaskSpec, all_tasks, get_task, register, split_answer

DEFAULT_TASKS = ("cognitive_distortion", "suicide_risk", "emotion")

__all__ = ["Label", "TaskSpec", "Parsed", "parse_answer", "get_task", "all_tasks", "register", "split_answer",
           "DEFAULT_TASKS", "OK", "FALLBACK", "INVALID"]
