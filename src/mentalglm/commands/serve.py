"""`mentalglm serve`: the HTTP API, the OpenAI-compatible endpoint and the web page over one loaded model."""

from __future__ import annotations

import logging
import shlex
import sys

from .. import DISCLAIMER
from ..tasks import DEFAULT_TASKS
from .common import add_model_args, heads_options, open_from_args

log = logging.getLogger("mentalglm.serve")

EXAMPLES = """examples:
  mentalglm serve                                   # default model on http://127.0.0.1:8000 (page at /, API docs at /docs)
  mentalglm serve --model qwen2.5-coder-0.5b-instruct-q4 --port 8080 --max-batch 16 --queue 4
  mentalglm serve --parallel 8 --queue 16          # 8 requests decode together; later ones join the running batch
  export MENTALGLM_TOKEN=$(python -c "import secrets; print(secrets.token_urlsafe(32))")
  mentalglm serve --host 0.0.0.0 --token-env MENTALGLM_TOKEN   # reachable from other machines: always with a token
  mentalglm serve --model runs/stage2/merged.gguf --prompt-style instruction --served-model-name mentalglm

  curl -s http://127.0.0.1:8000/v1/analyze -H 'Content-Type: application/json' \\
       -d '{"text": "最近总觉得自己什么都做不好", "tasks": ["cognitive_distortion"], "explain": false}'
  mentalglm analyze --model openai:qwen2.5-coder-1.5b-instruct-q4 --base-url http://127.0.0.1:8000/v1 "..."  # a client

  # GPU machine: print the equivalent vLLM server command (see docs/scale.md)
  mentalglm serve --print-vllm-command --model zwzzz/MentalGLM-chat --tensor-parallel-size 2
"""


def register(sub, fmt):
    p = sub.add_parser("serve", help="HTTP API + OpenAI-compatible endpoint + web page",
                       description="Serve analyses over HTTP. " + DISCLAIMER, epilog=EXAMPLES, formatter_class=fmt)
    net = p.add_argument_group("network")
    net.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 = every interface)")
    net.add_argument("--port", type=int, default=8000)
    net.add_argument("--token-env", metavar="VAR",
                     help="require 'Authorization: Bearer <token>' on /v1/*, the token read from this environment "
                          "variable (never pass a token on the command line: it shows in `ps`)")
    lim = p.add_argument_group("limits")
    lim.add_argument("--max-batch", type=int, default=32, help="posts per /v1/analyze request")
    lim.add_argument("--queue", type=int, default=8,
                     help="requests waiting for or holding the model; more get 429 with Retry-After")
    lim.add_argument("--timeout", type=float, default=120.0, help="seconds per request before 504")
    lim.add_argument("--max-post-chars", type=int, default=5000, help="characters per post")
    lim.add_argument("--max-upload-mb", type=float, default=20.0, help="size of an uploaded file for a job")
    lim.add_argument("--max-jobs", type=int, default=4, help="upload jobs queued or running")
    ana = p.add_argument_group("analysis")
    ana.add_argument("--tasks", default=",".join(DEFAULT_TASKS), help="tasks run when a request names none")
    ana.add_argument("--max-tokens", type=int, default=160, help="answer budget with explanations on")
    ana.add_argument("--resources", help="file with the crisis-resources message returned with high-risk results")
    ana.add_argument("--jobs-dir", help="where job results are written (default: <cache>/serve-jobs)")
    ana.add_argument("--served-model-name", help="model id in /v1/models and /v1/chat/completions "
                                                 "(default: the model's name)")
    add_model_args(p)
    gpu = p.add_argument_group("vLLM (GPU machines)")
    gpu.add_argument("--print-vllm-command", action="store_true",
                     help="print the `vllm serve` command for --model/--adapter and exit (nothing is loaded)")
    gpu.add_argument("--pipeline-parallel-size", type=int, default=1, help="nodes (pipeline stages) per replica")
    gpu.add_argument("--ray", action="store_true", help="use Ray as the executor (needed across nodes)")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.print_vllm_command:
        from ..llm.vllm_backend import serve_command, settings_for

        settings = settings_for(args.model, args.weights, adapter=args.adapter,
                                tensor_parallel_size=args.tensor_parallel_size,
                                pipeline_parallel_size=args.pipeline_parallel_size,
                                distributed_executor_backend="ray" if args.ray else None,
                                served_model_name=args.served_model_name, host=args.host, port=args.port)
        try:
            print(shlex.join(serve_command(settings)))
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        if args.token_env:
            print(f"# vLLM reads its bearer token from VLLM_API_KEY: export VLLM_API_KEY=\"${args.token_env}\" first",
                  file=sys.stderr)
        return 0

    from ..serve import ServeSettings, create_app, run_server

    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
    settings = ServeSettings(
        tasks=tasks, max_batch=args.max_batch, max_queue=args.queue, request_timeout=args.timeout,
        max_post_chars=args.max_post_chars, max_upload_bytes=int(args.max_upload_mb * 1_000_000),
        max_jobs=args.max_jobs, max_tokens=args.max_tokens, token_env=args.token_env, jobs_dir=args.jobs_dir,
        served_model_name=args.served_model_name, resources_path=args.resources, **heads_options(args))
    try:
        settings.token()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.token_env:
        log.warning("listening on %s without --token-env: anyone who can reach port %d can use the model",
                    args.host, args.port)
    backend, style = open_from_args(args)
    try:
        app = create_app(backend, style, settings)
        print(f"mentalglm: page http://{args.host}:{args.port}/  API docs http://{args.host}:{args.port}/docs")
        run_server(app, args.host, args.port)
    finally:
        backend.close()
    return 0
