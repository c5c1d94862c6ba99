"""What an operator can tune about the service: limits, auth, timeouts. Every limit has a reason in its comment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..tasks import DEFAULT_TASKS


@dataclass(frozen=True)
class ServeSettings:
    # Tasks run when a request names none.
    tasks: tuple[str, ...] = DEFAULT_TASKS
    # Posts in one /v1/analyze request: a CPU model takes seconds per post and task, so big batches belong
    # in an upload job, which reports progress instead of holding a connection open for minutes.
    max_batch: int = 32
    # Characters per post: Weibo's long-post limit is 5,000; longer text is almost surely not one post.
    max_post_chars: int = 5000
    # Bytes of a JSON request body (checked before it is parsed).
    max_body_bytes: int = 1_000_000
    # Bytes and rows of an uploaded file for a background job.
    max_upload_bytes: int = 20_000_000
    max_upload_rows: int = 20_000
    # Requests waiting for or holding the model. More get 429 with Retry-After at once, so a burst cannot
    # pile up unbounded work (and memory) behind a model that serves one request at a time.
    max_queue: int = 8
    # Upload jobs queued or running; they run one after another, interleaved with interactive requests.
    max_jobs: int = 4
    # Finished jobs (and their result files) kept for download; older ones are deleted.
    keep_jobs: int = 50
    # Seconds a request may wait for and use the model before it gets 504.
    request_timeout: float = 120.0
    # Answer budget in tokens with explanations on (labels-only answers stop after the label sentence).
    max_tokens: int = 160
    # Posts per unit of model work in a job: small units let interactive requests in between.
    job_chunk: int = 8
    # Label heads folder (None: the packaged ones, when the model uses heads) and the default P(high risk)
    # that flags a post (None: the heads' operating point); a request may send its own risk_threshold.
    heads: str | None = None
    risk_threshold: float | None = None
    # Who writes a heads row's explanation: "auto", "trained" or "base" (AnalyzeConfig.explainer).
    explainer: str = "auto"
    quote_first: bool = True  # AnalyzeConfig.quote_first
    brief: bool = False  # AnalyzeConfig.brief
    # Screening (heads.screen) for requests that do not say (`serve --screen`), and its operating point.
    screen: bool = False
    screen_threshold: float | None = None
    # Threads calling the backend. None: one for local models (llama.cpp is not thread-safe), the client's
    # concurrency for an OpenAI-compatible backend (a batching server such as vLLM gains from parallel calls).
    model_threads: int | None = None
    # Environment variable holding the bearer token; None = no auth (fine on 127.0.0.1 only).
    token_env: str | None = None
    # Where job results are written (default: <cache>/serve-jobs).
    jobs_dir: Path | None = None
    # Model id for /v1/models and /v1/chat/completions (default: the backend's name).
    served_model_name: str | None = None
    # Crisis-resources text shown with high-risk results (default: the packaged Chinese text).
    resources_path: str | None = None

    def token(self) -> str | None:
        """The bearer token, or None when auth is off. A named but empty variable is an error: fail closed."""
        if not self.token_env:
            return None
        value = os.environ.get(self.token_env, "").strip()
        if not value:
            raise ValueError(f"--token-env {self.token_env}: the environment variable is unset or empty; "
                             f"export {self.token_env}=<a long random string> or drop --token-env")
        return value
