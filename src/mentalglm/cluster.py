"""``analyze --ray [ADDRESS]``: the same analysis on a Ray cluster, through Ray Data (the ``cluster`` extra).

The driver (where ``mentalglm analyze`` runs) reads the posts and the finished rows of a resumed output exactly as
the local run does, and hands Ray Data one item per post still to do (with the tasks already done for it). Ray
Data cuts them into batches of ``--chunk`` posts and feeds them to a fixed pool of actors (``map_batches`` with
``ActorPoolStrategy``): each actor opens the model once, with the very function the local run opens it with
(``commands.analyze.open_analyzer``, given the command line's options), and runs ``Analyzer.stream`` over each
batch, so a row from an actor is the row the local run writes for that post (ids, labels, scores; only
``latency_ms`` differs). The driver writes rows as batches finish, through the same ``--out`` writer, so
``--resume`` after an interrupted Ray job is the local ``--resume``.

Order: rows come batch by batch in the order batches finish (Ray Data does not keep input order by default, so a
slow actor holds nobody back); within a batch, as the local run orders them (post by post, each post's tasks in
order, with label heads). Key rows by (id, task), never by position.

Faults: an actor whose process dies (killed, out of memory, a lost node) is restarted by Ray (``max_restarts=-1``)
and the batch it held is run again (``max_task_retries``, ``--ray-retries``); a batch's rows reach the driver only
when the whole batch is done, so every row is written once. A batch that kills its actor more often than that
fails the job: rerun with ``--resume``.

Ray is imported only here, and only once ``--ray`` is given.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import pickle
import re
import warnings
from copy import copy
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from .analyze import Analysis
from .columnar import is_parquet
from .errors import DataError, require
from .inputs import Post
from .llm.registry import scheme_of, whole_number

log = logging.getLogger("mentalglm")

FAILED = "__mentalglm_failed__"  # a row that is an actor's failure to open the model (see AnalyzeActor)
LOCAL = "local"  # --ray without an address: an embedded cluster on this machine, shut down after the run
_ADDRESS = re.compile(r"^(auto|local|ray://[^\s/]+|[A-Za-z0-9_.\-\[\]:]+:\d+)$")
# Options that name no file: never made absolute for the actors (see ``for_actors``).
_NOT_PATHS = {"post", "file", "out", "resources", "format", "tasks", "text_column", "id_column", "ray", "verb"}


def ray_address(value: str) -> str:
    """argparse type of ``--ray``: '' (an embedded cluster), local, auto, host:port or ray://host:port."""
    if value == "" or _ADDRESS.match(value):
        return value
    raise argparse.ArgumentTypeError(
        f"{value!r} is not a Ray address (host:port, ray://host:port, auto or local); to analyze one post, give "
        "it before --ray, or use --file")


def add_ray_args(p) -> None:
    g = p.add_argument_group("cluster (Ray; the 'cluster' extra, docs/scale.md)")
    g.add_argument("--ray", nargs="?", const="", type=ray_address, metavar="ADDRESS",
                   help="run on a Ray cluster through Ray Data: actors that each hold one model, the same rows as a "
                        "local run (in the order batches finish). ADDRESS: host:port of a cluster's head "
                        "(`ray start --head`), ray://host:10001, or auto (the cluster this node belongs to); "
                        "without one, an embedded cluster on this machine, shut down after")
    g.add_argument("--ray-actors", type=whole_number,
                   help="actors (model copies) in the pool (default: the cluster's CPUs / --ray-cpus, or its GPUs / "
                        "--ray-gpus)")
    g.add_argument("--ray-cpus", type=float,
                   help="CPUs each actor reserves; llama.cpp uses as many threads unless --threads (default: 2, "
                        "1 with --ray-gpus)")
    g.add_argument("--ray-gpus", type=float,
                   help="GPUs each actor reserves (vllm:<model>; default: --tensor-parallel-size for vllm:, else 0)")
    g.add_argument("--ray-retries", type=int, default=3,
                   help="times a batch is run again after its actor died (the actor is restarted each time)")


def check_extras(args) -> None:
    """The optional extras ``args`` need (``--ray``: cluster; Parquet in or out: parquet), imported before anything
    is read or loaded: a missing one is ``MissingExtra`` (exit 4, with the pip line)."""
    if getattr(args, "ray", None) is not None:
        require("ray", "cluster")
        require("ray.data", "cluster")
    if is_parquet(getattr(args, "out", None)) or is_parquet(getattr(args, "file", None), getattr(args, "format", None)):
        require("pyarrow", "parquet")


@dataclass(frozen=True)
class ActorPlan:
    """What each actor of the pool reserves, and how Ray recovers it."""

    actors: int | None  # None: from the cluster's resources once connected
    num_cpus: float
    num_gpus: float
    retries: int

    def recovery(self) -> dict:
        """An actor that dies is restarted, as often as it takes; the batch it held is run again ``retries`` times."""
        return {"max_restarts": -1, "max_task_retries": self.retries}

    def pool_size(self, resources: dict) -> int:
        """``actors``, else as many as the cluster's CPUs (GPUs, for GPU actors) hold, at least one."""
        if self.actors:
            return self.actors
        if self.num_gpus:
            return max(1, int(resources.get("GPU", 0) // self.num_gpus))
        return max(1, int(resources.get("CPU", 1) // self.num_cpus))


def plan(args) -> ActorPlan:
    """The actor pool of ``args``: GPU actors for ``vllm:`` models (as many GPUs as --tensor-parallel-size), CPU
    actors of --ray-cpus (2) otherwise."""
    vllm = scheme_of(args.model, args.base_url) == "vllm"
    gpus = args.ray_gpus if args.ray_gpus is not None else (float(args.tensor_parallel_size) if vllm else 0.0)
    cpus = args.ray_cpus if args.ray_cpus is not None else (1.0 if gpus else 2.0)
    return ActorPlan(args.ray_actors, cpus, gpus, max(0, args.ray_retries))


def for_actors(args, actor: ActorPlan):
    """A copy of the options for the actors: paths that exist here made absolute (an actor's working directory is
    not the driver's; on a real cluster the same path must exist on every node), and llama.cpp threads set to the
    actor's CPUs unless --threads says otherwise."""
    options = copy(args)
    for name, value in vars(args).items():
        if name in _NOT_PATHS or not isinstance(value, str) or not value:
            continue
        if os.path.exists(value) and not os.path.isabs(value):
            setattr(options, name, str(Path(value).resolve()))
    if getattr(args, "threads", None) is None and not actor.num_gpus:
        options.threads = max(1, int(actor.num_cpus))
    return options


class AnalyzeActor:
    """One actor of the pool: opens the model once (``opener()``, the local run's own way), then analyzes each
    batch of posts it is given; a batch is one JSON column ``post`` in, one JSON column ``row`` out."""

    def __init__(self, opener: Callable[[], object]):
        # A model that does not open (not available, heads that do not fit it) is reported by each batch as one row
        # holding the exception, which the driver raises as the local run would (exit 2 or 3, its message): Ray
        # hands the driver an exception from an actor's creation or from a batch only as text.
        try:
            self.analyzer, self.failed = opener(), None
        except Exception as e:
            log.error("the model did not open on this actor: %s", e)
            self.analyzer, self.failed = None, e

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        if self.failed is not None:
            failed = base64.b64encode(pickle.dumps(self.failed)).decode("ascii")
            return {"row": np.array([json.dumps({FAILED: failed})], dtype=object)}
        posts, done = [], set()
        for item in batch["post"]:
            pid, text, error, line, skip = json.loads(item)
            posts.append(Post(pid, text, error, line))
            done.update((pid, task) for task in skip)
        rows = [a.to_json() for a in self.analyzer.stream(posts, done=done, chunk=max(1, len(posts)))]
        return {"row": np.array(rows, dtype=object)}


def items(posts: Iterable[Post], tasks: Sequence[str], done: set[tuple[str, str]]) -> list[dict]:
    """One item per post with a task still to do: the post and the tasks of it already done (``--resume``)."""
    out = []
    for p in posts:
        skip = [t for t in tasks if (p.id, t) in done]
        if len(skip) < len(tasks):
            out.append({"post": json.dumps([p.id, p.text, p.error, p.line, skip], ensure_ascii=False)})
    return out


class Cluster:
    """The connection to Ray: an embedded cluster (``--ray`` alone; shut down by ``close``), the cluster at an
    address, or the Ray this process already runs (a notebook, the tests), left running."""

    def __init__(self, address: str, name: str):
        ray = require("ray", "cluster")
        self.started = False
        if ray.is_initialized():
            pass
        elif address in ("", LOCAL):
            ray.init(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False,
                     logging_level=logging.WARNING, log_to_driver=True)
            self.started = True
        else:
            ray.init(address=address, logging_level=logging.WARNING)
        self.name = name

    def resources(self) -> dict:
        import ray

        return ray.cluster_resources()

    def close(self) -> None:
        if self.started:
            import ray

            ray.shutdown()
            self.started = False


class ClusterAnalyzer:
    """``Analyzer.stream`` on a Ray cluster: ``stream(posts, done, chunk)`` yields the same ``Analysis`` rows, batch
    by batch as they finish. ``backend`` is the cluster (``name``, ``close``), as the local analyzer's is its model."""

    def __init__(self, args, opener: Callable[[object], object], tasks: Sequence[str]):
        self.plan = plan(args)
        self.tasks = tuple(tasks)
        self.backend = Cluster(args.ray, f"ray {args.ray or LOCAL}: {args.model}")
        resources = self.backend.resources()
        if args.ray_cpus is None and 0 < resources.get("CPU", 0) < self.plan.num_cpus:  # a 1-CPU machine
            self.plan = replace(self.plan, num_cpus=resources["CPU"])
        if args.ray in ("", LOCAL):  # a cluster that cannot grow: an actor it cannot place would wait forever
            for flag, need, kind in (("--ray-cpus", self.plan.num_cpus, "CPU"),
                                     ("--ray-gpus", self.plan.num_gpus, "GPU")):
                if need > resources.get(kind, 0):
                    self.backend.close()
                    raise DataError(flag, None, f"each actor reserves {need:g} {kind}s; the local cluster has "
                                                f"{resources.get(kind, 0):g}")
        self.actors = self.plan.pool_size(resources)
        self.opener = partial(opener, for_actors(args, self.plan))
        self.backend.name += f" x {self.actors} actor{'s' * (self.actors > 1)}"

    def dataset(self, posts: Iterable[Post], done: set[tuple[str, str]], chunk: int):
        import ray.data

        logging.getLogger("ray.data").setLevel(logging.WARNING)  # its per-dataset notes; the bar says enough
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the command's own bar counts rows
        context.print_on_execution_start = False
        todo = items(posts, self.tasks, done)
        if not todo:
            return None
        chunk = max(1, chunk)
        batches = -(-len(todo) // chunk)
        data = ray.data.from_items(todo, override_num_blocks=batches)
        options = dict(fn_constructor_args=(self.opener,), batch_size=chunk, batch_format="numpy",
                       compute=ray.data.ActorPoolStrategy(size=min(self.actors, batches)), num_cpus=self.plan.num_cpus,
                       num_gpus=self.plan.num_gpus)
        with warnings.catch_warnings():
            # Ray 2.5x-2.63 take the actors' restart and retry counts as "ray_remote_args" and warn that these go in
            # 2.64; where they are gone, Ray Data's own defaults (restart and retry without limit) apply.
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                return data.map_batches(AnalyzeActor, **options, **self.plan.recovery())
            except TypeError:
                return data.map_batches(AnalyzeActor, **options)

    def stream(self, posts: Iterable[Post], done: set[tuple[str, str]] = frozenset(), chunk: int = 16,
               watch=None) -> Iterator[Analysis]:
        ds = self.dataset(posts, set(done), chunk)
        if ds is None:
            return
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for row in batch["row"]:
                fields = json.loads(row)
                if FAILED in fields:
                    raise _as_local(pickle.loads(base64.b64decode(fields[FAILED])))
                analysis = Analysis(**fields)
                if watch is not None:
                    watch.finished(analysis)
                yield analysis


def _as_local(e: Exception) -> Exception:
    """An actor's failure to open the model as the local command reports it: heads that do not fit the model are a
    usage error (exit 2), a model that is not available exit 3, and so on."""
    from .heads import HeadsError

    return DataError("--heads", None, str(e)) if isinstance(e, HeadsError) else e


def open_on_ray(args, opener: Callable[[object], object], tasks: Sequence[str]) -> ClusterAnalyzer:
    """The analyzer of ``analyze --ray``: ``opener(options)`` is what opens the local run's analyzer; each actor
    calls it with the command's options (so every option of the local run reaches the actors unchanged)."""
    return ClusterAnalyzer(args, opener, tasks)
