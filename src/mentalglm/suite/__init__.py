"""`mentalglm eval suite`: a declarative list of systems x tasks x split, run with cached predictions, scored into
one report (comparison tables with intervals, paired differences against a reference system, per-class plots,
explanation metrics, literature anchors)."""

from .config import SuiteConfig, SystemSpec, load_suite
from .run import SuiteResult, run_suite

__all__ = ["SuiteConfig", "SystemSpec", "load_suite", "run_suite", "SuiteResult"]
