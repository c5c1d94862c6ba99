"""Background jobs for uploaded files: posts in, JSONL out, progress to poll.

A job's posts live in memory only (the upload is parsed from a private temporary file that is deleted at once);
its results are appended to ``<jobs_dir>/<id>.jsonl`` one line per (post, task) as they are produced, so a
partial download works mid-run. Jobs run one at a time on a runner thread; each unit of model work (one task
over a group of posts, see ``Analyzer.units``) goes through the shared model worker, so interactive requests get
in between units.
"""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty, Queue

from ..analyze import ERROR, AnalyzeConfig
from ..inputs import Post, read_posts
from ..jsonl import Appender
from .service import AnalysisService, fingerprint
from .worker import ModelWorker, QueueFull

log = logging.getLogger("mentalglm.serve")

ACTIVE = ("queued", "running")


@dataclass
class Job:
    id: str
    filename: str
    posts: list[Post]
    config: AnalyzeConfig
    out_path: Path
    status: str = "queued"
    done: int = 0
    errors: int = 0
    high_risk: int = 0
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    n_posts: int = 0

    def __post_init__(self):
        self.n_posts = len(self.posts)  # kept: the posts themselves are dropped when the job ends

    @property
    def total(self) -> int:
        return self.n_posts * len(self.config.tasks)

    def view(self) -> dict:
        return {"id": self.id, "status": self.status, "filename": self.filename, "tasks": list(self.config.tasks),
                "explain": self.config.explain, "screen": self.config.screen, "posts": self.n_posts,
                "total": self.total, "done": self.done,
                "errors": self.errors, "high_risk": self.high_risk,
                "progress": round(self.done / self.total, 4) if self.total else 1.0, "created": self.created,
                "started": self.started, "finished": self.finished, "error": self.error,
                "results_url": f"/v1/jobs/{self.id}/results"}


def encodable(text: str) -> bool:
    """False for text with lone surrogates (JSON's \\ud800 escapes), which no tokenizer accepts."""
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def parse_upload(data: bytes, filename: str, text_column: str | None, id_column: str | None, max_rows: int,
                 workdir: Path) -> list[Post]:
    """Posts from an uploaded CSV/TSV/JSONL/TXT, with the same reader and messages as ``analyze --file``.

    Raises ``DataError`` (a missing column, an unknown format) or ``ValueError`` (no rows, too many rows)."""
    suffix = Path(filename).suffix.lower() or ".csv"
    fd, tmp = tempfile.mkstemp(suffix=suffix, dir=workdir)  # 0600, removed before this returns
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        posts: list[Post] = []
        for post in read_posts(tmp, text_column or None, id_column or None):
            if post.error:  # row errors name the file: the user's name, not the temporary one
                post = Post(post.id, post.text, post.error.replace(tmp, Path(filename).name))
            elif not encodable(post.text):  # a JSON "\ud800" escape: no tokenizer takes it
                post = Post(post.id, "", f"post {post.id}: a lone surrogate (e.g. \\ud800) is not valid Unicode")
            posts.append(post)
            if len(posts) > max_rows:
                raise ValueError(f"the file has more than {max_rows:,} rows; split it into smaller files")
    finally:
        os.unlink(tmp)
    if not posts:
        raise ValueError("the file holds no posts")
    return posts


class JobManager:
    def __init__(self, service: AnalysisService, worker: ModelWorker, jobs_dir: Path, max_jobs: int,
                 keep: int, chunk: int):
        self.service, self.worker = service, worker
        self.dir = jobs_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)  # results quote posts in their explanations
        self.max_jobs, self.keep, self.chunk = max_jobs, keep, max(1, chunk)
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._queue: Queue[Job] = Queue()
        self._stop = threading.Event()
        self._runner = threading.Thread(target=self._run_forever, name="mentalglm-jobs", daemon=True)
        self._runner.start()

    # ------------------------------------------------------------------ API
    def submit(self, filename: str, posts: list[Post], config: AnalyzeConfig) -> Job:
        with self._lock:
            active = sum(1 for j in self._jobs.values() if j.status in ACTIVE)
            if active >= self.max_jobs:
                raise QueueFull(self.max_jobs, retry_after=max(5, self.worker.retry_after()))
            job_id = secrets.token_hex(16)  # unguessable: ids are not listed anywhere
            job = Job(job_id, Path(filename).name[:200], posts, config, self.dir / f"{job_id}.jsonl")
            job.out_path.touch(mode=0o600)
            self._jobs[job_id] = job
            self._evict()
        log.info("job %s: queued %d post(s) from an upload (%s), tasks=%s explain=%s", job_id, len(posts),
                 fingerprint(filename), ",".join(config.tasks), config.explain)
        self._queue.put(job)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def cancel(self, job_id: str) -> Job | None:
        job = self.get(job_id)
        if job is not None and job.status in ACTIVE:
            job.cancel.set()
            if job.status == "queued":
                job.status, job.finished = "cancelled", time.time()
        return job

    def delete(self, job_id: str) -> bool:
        with self._lock:
            job = self._jobs.pop(job_id, None)
        if job is None:
            return False
        job.cancel.set()
        job.out_path.unlink(missing_ok=True)
        return True

    def counts(self) -> dict:
        with self._lock:
            statuses = [j.status for j in self._jobs.values()]
        return {s: statuses.count(s) for s in ("queued", "running", "done", "failed", "cancelled")}

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            for job in self._jobs.values():
                job.cancel.set()
        self._runner.join(timeout=10)

    # ------------------------------------------------------------------ running
    def _evict(self) -> None:
        finished = [j for j in self._jobs.values() if j.status not in ACTIVE]
        for job in finished[:max(0, len(finished) - self.keep)]:
            del self._jobs[job.id]
            job.out_path.unlink(missing_ok=True)

    def _run_forever(self) -> None:
        while not self._stop.is_set():
            try:
                job = self._queue.get(timeout=0.2)
            except Empty:
                continue
            if job.cancel.is_set():
                continue
            try:
                self._run(job)
            except Exception as e:  # noqa: BLE001 - a failed job must not stop the runner
                job.status, job.error = "failed", f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
                log.error("job %s failed after %d/%d: %s", job.id, job.done, job.total, type(e).__name__)
            finally:
                job.finished = time.time()
                job.posts = []  # the posts are not needed any more: drop them from memory

    def _run(self, job: Job) -> None:
        job.status, job.started = "running", time.time()
        analyzer = self.service.analyzer(job.config)
        with Appender(job.out_path) as out:
            for unit in analyzer.units(job.posts, chunk=self.chunk):
                if job.cancel.is_set() or self._stop.is_set():
                    job.status, job.error = "cancelled", job.error or "cancelled before the end"
                    return
                results = self.worker.call(unit)  # one unit at a time: interactive requests get in between
                for a in results:
                    out.write(a.to_json())
                    job.errors += a.parse_status == ERROR
                    job.high_risk += a.high_risk
                job.done += len(results)
        job.status = "done"
        log.info("job %s: done, %d results, %d errors, %d high risk, %.1f s", job.id, job.done, job.errors,
                 job.high_risk, time.time() - (job.started or job.created))
