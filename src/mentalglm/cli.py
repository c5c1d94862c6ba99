"""The ``mentalglm`` command: one subcommand per verb, each in ``mentalglm/commands/<verb>.py``."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from . import DISCLAIMER, __version__
from .data.records import DataError
from .errors import MissingExtra
from .llm.base import ModelUnavailable

VERBS = ("analyze", "tasks", "models", "data", "eval", "serve", "train", "heads")

EXAMPLES = """examples:
  mentalglm analyze "最近总觉得自己什么都做不好，大家一定都讨厌我"
  mentalglm analyze --file posts.csv --text-column content --out results.jsonl --resume
  mentalglm tasks
  mentalglm models
"""


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the examples in epilogs as written and shows defaults that say something.

    ``(default: None)`` says nothing, and ``--no-explain (default: True)`` reads as if labels-only were the
    default (the True is the value of ``explain``), so unset and on/off flags show no default.
    """

    def _get_help_string(self, action):
        if action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mentalglm", formatter_class=HelpFormatter, epilog=EXAMPLES,
                                     description=f"Explainable mental-health analysis of Chinese social-media posts.\n{DISCLAIMER}")
    parser.add_argument("--version", action="version", version=f"mentalglm {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb in VERBS:
        try:
            module = importlib.import_module(f"mentalglm.commands.{verb}")
        except ModuleNotFoundError as e:
            if e.name == f"mentalglm.commands.{verb}":
                continue  # a verb not built yet
            raise
        module.register(sub, HelpFormatter)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ModelUnavailable as e:
        print(f"error: model not available: {e}", file=sys.stderr)
        return 3
    except MissingExtra as e:
        print(f"error: {e}", file=sys.stderr)
        return 4
    except KeyboardInterrupt:
        print("interrupted; rerun with --resume to continue where it stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
