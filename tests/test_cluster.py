"""``analyze --ray`` on an embedded Ray cluster, Parquet in and out, and the optional extras they need.

One local cluster (``ray.init(num_cpus=2)``) serves the module; the CLI's ``--ray`` without an address joins a Ray
this process already runs, so each run costs its actors' start, not a cluster's. The model is the tiny random GGUF
with tiny label heads (tests/tiny_heads.py): real llama.cpp and real heads, in milliseconds a post. No test times
anything: a loaded 2-core machine is only slower.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest

from mentalglm.cli import build_parser, main
from mentalglm.inputs import read_posts, unique_ids
from mentalglm.jsonl import write_rows
from tiny_heads import build_tiny_heads

TASKS = ("suicide_risk", "emotion", "cognitive_distortion")
CUES = ["不想活了", "很开心", "他们一定讨厌我", "好难过", "通知一下", "气死了", "我就是个废物", "有点累"]
TEXTS = [f"第{i}条：{CUES[i % len(CUES)]}{'今天' * (i % 3)}" for i in range(22)]
TEXTS[1] = ""  # an empty post: an error row, made by the driver's reading, the same on both paths
IDS = [f"p{i}" for i in range(len(TEXTS))]


@pytest.fixture(scope="module")
def model(tmp_path_factory, tiny_gguf_path):
    from mentalglm.llm.llamacpp import LlamaCppBackend

    backend = LlamaCppBackend(tiny_gguf_path, n_ctx=512, n_threads=1)
    try:
        heads = build_tiny_heads(backend, tmp_path_factory.mktemp("cluster-heads") / "heads")
    finally:
        backend.close()
    return tiny_gguf_path, heads


@pytest.fixture(scope="module")
def posts_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cluster-posts") / "posts.csv"
    path.write_text("id,text\n" + "".join(f"{i},{t}\n" for i, t in zip(IDS, TEXTS)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def ray_cluster():
    """One embedded cluster for the module: 2 CPUs, as on the machine the tests are written for."""
    ray = pytest.importorskip("ray")
    import ray.cloudpickle

    # The killing opener below is defined here: its code goes to the actors by value, not as an import of tests/.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def analyze_args(model, *extra) -> list[str]:
    gguf, heads = model
    return ["analyze", "--model", str(gguf), "--heads", str(heads), "--n-ctx", "512", "--threads", "1",
            "--parallel", "4", "--max-tokens", "6", "--tasks", ",".join(TASKS), *extra]


RAY = ("--ray", "--ray-actors", "2", "--ray-cpus", "1")


def rows_of(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        from mentalglm.columnar import read_parquet_rows

        return read_parquet_rows(path)
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def comparable(rows: list[dict], keep_error_text: bool = True) -> list[dict]:
    """Rows by (id, task), without the time they took (the only field that differs between two runs); the text of
    an error row names the input file, which differs between a CSV and a Parquet input."""
    out = []
    for r in sorted(rows, key=lambda r: (r["id"], r["task"])):
        r = {k: v for k, v in r.items() if k != "latency_ms"}
        if not keep_error_text and r["error"]:
            r["error"] = "<error>"
        out.append(r)
    return out


def once_each(rows: list[dict]) -> bool:
    keys = [(r["id"], r["task"]) for r in rows]
    return len(keys) == len(set(keys)) == len(IDS) * len(TASKS)


@pytest.fixture(scope="module")
def runs(ray_cluster, model, posts_csv, tmp_path_factory):
    """The same file through the local run and through --ray (2 actors of 1 CPU, batches of 4 posts)."""
    folder = tmp_path_factory.mktemp("cluster-runs")
    local, on_ray = folder / "local.jsonl", folder / "ray.jsonl"
    codes = (main(analyze_args(model, "--file", str(posts_csv), "--chunk", "4", "--out", str(local))),
             main(analyze_args(model, "--file", str(posts_csv), "--chunk", "4", "--out", str(on_ray), *RAY)))
    return codes, rows_of(local), rows_of(on_ray), on_ray


def test_ray_writes_the_rows_of_the_local_run(runs):
    codes, local, on_ray, _ = runs
    assert codes == (1, 1)  # the empty post is an error row on both paths
    assert once_each(local) and once_each(on_ray)
    assert comparable(on_ray) == comparable(local)  # ids, labels, scores, explanations, flags, errors
    assert any(r["explanation"] for r in on_ray) and all(r["scores"] for r in on_ray if not r["error"])
    # The documented order: batches as they finish; within one, post by post, each post's tasks in order.
    runs_of_ids = [r["id"] for i, r in enumerate(on_ray) if i == 0 or on_ray[i - 1]["id"] != r["id"]]
    assert len(runs_of_ids) == len(IDS)
    assert all([r["task"] for r in on_ray if r["id"] == pid] == list(TASKS) for pid in IDS)


def test_an_interrupted_ray_job_resumes_without_repeating_a_row(runs, model, posts_csv, tmp_path):
    _, local, _, full = runs
    out = tmp_path / "ray.jsonl"
    lines = full.read_bytes().splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:10]) + lines[10][:25])  # killed mid-line after 10 rows
    Path(str(out) + ".meta.json").write_bytes(Path(str(full) + ".meta.json").read_bytes())
    assert main(analyze_args(model, "--file", str(posts_csv), "--chunk", "4", "--out", str(out), "--resume",
                             *RAY)) == 1
    rows = rows_of(out)
    kept = [line for line in lines[:10] if not json.loads(line)["error"]]  # error rows are redone
    assert out.read_bytes().splitlines(keepends=True)[:len(kept)] == kept  # the rest stays as it was
    assert once_each(rows) and comparable(rows) == comparable(local)
    # Nothing left to do (the error row kept): a second resume writes nothing and starts no actor.
    before = out.read_bytes()
    assert main(analyze_args(model, "--file", str(posts_csv), "--out", str(out), "--resume", "--keep-errors",
                             *RAY)) == 1
    assert out.read_bytes() == before


class Dying:
    """The real analyzer, except that the process holding it kills itself (SIGKILL: no cleanup, as an OOM kill or a
    lost node) when given its batch number ``after + 1``, if no actor has done so yet (the marker file)."""

    def __init__(self, inner, marker: str, after: int):
        self.inner, self.marker, self.after, self.batches = inner, marker, after, 0
        self.backend = inner.backend

    def stream(self, posts, done=frozenset(), chunk=16):
        self.batches += 1
        if self.batches > self.after:
            try:
                fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass
            else:
                os.write(fd, f"{os.getpid()} {[p.id for p in posts]}".encode())
                os.close(fd)
                os.kill(os.getpid(), signal.SIGKILL)
        return self.inner.stream(posts, done=done, chunk=chunk)


def dying_analyzer(options, *, tasks, marker, after):
    from mentalglm.commands.analyze import open_analyzer

    return Dying(open_analyzer(options, tasks), marker, after)


def test_a_killed_actor_is_restarted_and_every_row_is_written_once(runs, model, posts_csv, tmp_path):
    from mentalglm.cluster import open_on_ray

    _, local, _, _ = runs
    args = build_parser().parse_args(analyze_args(model, "--file", str(posts_csv), *RAY))
    marker = tmp_path / "killed"
    analyzer = open_on_ray(args, partial(dying_analyzer, tasks=TASKS, marker=str(marker), after=2), TASKS)
    assert analyzer.plan.recovery() == {"max_restarts": -1, "max_task_retries": 3}
    out = tmp_path / "out.jsonl"
    write_rows(analyzer.stream(unique_ids(read_posts(posts_csv), "posts"), chunk=2), out)  # 11 batches
    pid, _, batch = marker.read_text().partition(" ")
    assert int(pid) != os.getpid() and batch  # an actor died, holding a batch
    rows = rows_of(out)
    assert once_each(rows) and comparable(rows) == comparable(local)


@pytest.mark.parametrize("problem, code, message", [("missing", 3, "model not available"),
                                                     ("other model", 2, "--heads: ")])
def test_a_model_that_does_not_open_on_the_actors_exits_as_locally(ray_cluster, model, posts_csv, tmp_path, capsys,
                                                                   problem, code, message):
    from tiny_models import build_tiny_gguf

    args = analyze_args(model, "--file", str(posts_csv), "--out", str(tmp_path / "out.jsonl"), *RAY)
    other = tmp_path / "missing.gguf" if problem == "missing" else build_tiny_gguf(tmp_path / "other.gguf", seed=1)
    args[args.index("--model") + 1] = str(other)  # the heads were fitted on another model's states
    assert main(args) == code
    assert message in capsys.readouterr().err


def test_a_pool_the_local_cluster_cannot_place_is_refused(ray_cluster, model, posts_csv, tmp_path, capsys):
    args = analyze_args(model, "--file", str(posts_csv), "--out", str(tmp_path / "out.jsonl"), "--ray",
                        "--ray-cpus", "4")
    assert main(args) == 2
    assert "--ray-cpus: each actor reserves 4 CPUs; the local cluster has 2" in capsys.readouterr().err
    assert ray_cluster.is_initialized()  # a Ray the process already ran is left running


# --------------------------------------------------------------------------------------------------- Parquet
@pytest.fixture(scope="module")
def posts_parquet(tmp_path_factory) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path_factory.mktemp("parquet-posts") / "posts.parquet"
    pq.write_table(pa.table({"lang": ["zh"] * len(IDS), "id": IDS, "text": TEXTS}), path)
    return path


def test_parquet_in_and_out_on_ray_gives_the_rows_of_jsonl(runs, model, posts_parquet, tmp_path):
    _, local, _, _ = runs
    out = tmp_path / "results.parquet"
    assert main(analyze_args(model, "--file", str(posts_parquet), "--chunk", "4", "--out", str(out), *RAY)) == 1
    rows = rows_of(out)
    assert once_each(rows) and comparable(rows, False) == comparable(local, False)
    assert {(r["id"], r["error"]) for r in rows if r["error"]} == {("p1", f"{posts_parquet} row 2: empty post")}
    assert not Path(str(out) + ".partial.jsonl").exists() and Path(str(out) + ".meta.json").exists()


def test_parquet_output_schema(tmp_path):
    import dataclasses

    import pyarrow as pa
    import pyarrow.parquet as pq

    from mentalglm.analyze import Analysis
    from mentalglm.columnar import known_types, rows_table, table_rows, write_parquet

    # Every field of a row is typed by name; fields added later are typed by their values.
    assert [f.name for f in dataclasses.fields(Analysis)] == list(known_types())
    row = dataclasses.asdict(Analysis("a1", "emotion", ["悲伤"], "", "这篇帖子体现了悲伤。", "ok", "m", 1.5,
                                      scores={"悲伤": 0.75, "积极": 0.25}, runner_up={"label": "积极", "p": 0.25}))
    later = {**row, "decided_by": "screen", "extra": {"k": [1]}}  # fields added later: typed from their values
    write_parquet([later, {**row, "id": "a2", "decided_by": None, "extra": None, "evidence_ok": True}],
                  tmp_path / "r.parquet")
    schema = pq.read_schema(tmp_path / "r.parquet")
    assert schema.field("labels").type == pa.list_(pa.string())
    assert schema.field("scores").type == pa.map_(pa.string(), pa.float64())
    assert schema.field("evidence_ok").type == pa.bool_() and schema.field("error").type == pa.string()
    assert schema.field("explanation_consistent").type == pa.bool_()  # null in every row, still typed
    assert schema.field("runner_up").type == pa.struct([("label", pa.string()), ("p", pa.float64())])
    assert schema.field("quotes_repaired").type == pa.int64()
    assert schema.field("decided_by").type == pa.string() and schema.field("extra").type == pa.string()
    back = table_rows(pq.read_table(tmp_path / "r.parquet"))
    assert back[0] == later and back[0]["scores"] == {"悲伤": 0.75, "积极": 0.25}
    assert rows_table([]).num_rows == 0


def test_parquet_output_resumes_a_killed_run_and_refuses_to_overwrite(model, posts_parquet, tmp_path, capsys):
    pytest.importorskip("pyarrow")
    out = tmp_path / "results.parquet"
    args = analyze_args(model, "--no-explain", "--file", str(posts_parquet), "--out", str(out))
    assert main(args) == 1
    full = rows_of(out)
    assert once_each(full)
    assert main(args) == 2 and "exists; pass --resume" in capsys.readouterr().err
    # Killed mid-run: no Parquet file yet, the rows so far in the partial file (a torn last line).
    partial_file = Path(str(out) + ".partial.jsonl")
    written = [json.dumps(r, ensure_ascii=False) + "\n" for r in full[:8]]
    partial_file.write_text("".join(written[:7]) + written[7][:20], encoding="utf-8")
    os.replace(str(out) + ".meta.json", str(partial_file) + ".meta.json")
    out.unlink()
    assert main(args) == 2  # an unfinished run is there: --resume or --overwrite
    assert main([*args, "--resume"]) == 1
    rows = rows_of(out)
    kept = [r for r in full[:7] if not r["error"]]  # error rows are redone
    assert rows[:len(kept)] == kept and once_each(rows) and comparable(rows) == comparable(full)
    assert not partial_file.exists()
    # A finished file resumed: nothing to do, the same rows; other settings: refused, the file untouched.
    assert main([*args, "--resume", "--keep-errors"]) == 1 and rows_of(out) == rows
    assert main([*args, "--resume", "--tasks", "emotion"]) == 2 and rows_of(out) == rows
    assert not partial_file.exists()


def test_parquet_input_names_a_missing_column(posts_parquet, tmp_path, capsys):
    out = tmp_path / "x.jsonl"
    assert main(["analyze", "--file", str(posts_parquet), "--text-column", "body", "--out", str(out)]) == 2
    assert not out.exists()
    assert "no text column 'body'; columns are ['lang', 'id', 'text']" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- extras, options
@pytest.mark.parametrize("module, extra, argv", [
    ("ray", "cluster", ["--file", "posts.csv", "--out", "out.jsonl", "--ray"]),
    ("pyarrow", "parquet", ["--file", "posts.csv", "--out", "out.parquet"]),
    ("pyarrow", "parquet", ["--file", "posts.parquet", "--out", "out.jsonl"]),
])
def test_a_missing_extra_exits_4_with_its_pip_line(monkeypatch, capsys, tmp_path, module, extra, argv):
    monkeypatch.setitem(sys.modules, module, None)  # `import ray` / `import pyarrow` now fails
    monkeypatch.chdir(tmp_path)
    assert main(["analyze", *argv]) == 4
    err = capsys.readouterr().err
    assert f"pip install 'mentalglm[{extra}]'" in err and f"({module} is not installed)" in err
    assert not list(tmp_path.iterdir())  # nothing read, nothing written


@pytest.mark.parametrize("address, ok", [("10.0.0.1:6379", True), ("auto", True), ("ray://head:10001", True),
                                         ("head-node.lan:6379", True), ("好累", False), ("a post", False)])
def test_ray_takes_an_address_or_nothing(address, ok, capsys):
    parse = partial(build_parser().parse_args)
    if ok:
        assert parse(["analyze", "--file", "x.csv", "--ray", address]).ray == address
    else:
        with pytest.raises(SystemExit) as e:
            parse(["analyze", "--ray", address])
        assert e.value.code == 2 and "is not a Ray address" in capsys.readouterr().err
    assert parse(["analyze", "--file", "x.csv", "--ray"]).ray == ""
    assert parse(["analyze", "--file", "x.csv"]).ray is None


def test_gpu_actors_for_vllm_models_the_plumbing_only(tmp_path, monkeypatch):
    """vLLM explanations on GPU nodes through the same actors: the pool reserves --tensor-parallel-size GPUs an
    actor and the actor opens the vllm: model with the command's options. Nothing here has run on a GPU."""
    from mentalglm.cluster import for_actors, plan
    from mentalglm.commands.analyze import open_analyzer
    from mentalglm.llm.base import ModelUnavailable

    args = build_parser().parse_args(["analyze", "--model", "vllm:zwzzz/MentalGLM-chat", "--prompt-style",
                                      "instruction", "--tensor-parallel-size", "2", "--file", "p.csv", "--ray",
                                      "10.0.0.1:6379"])
    gpu = plan(args)
    assert (gpu.num_gpus, gpu.num_cpus, gpu.actors) == (2.0, 1.0, None)
    assert gpu.pool_size({"CPU": 64, "GPU": 8}) == 4
    options = for_actors(args, gpu)
    assert options.threads is None and options.tensor_parallel_size == 2 and options.model == args.model
    if "vllm" not in sys.modules:
        try:
            import vllm  # noqa: F401
        except ImportError:
            with pytest.raises(ModelUnavailable, match="vLLM"):
                open_analyzer(options, ("suicide_risk",))
    one = plan(build_parser().parse_args(["analyze", "--model", "vllm:x", "--ray", "--ray-gpus", "1",
                                          "--ray-actors", "3"]))
    assert (one.num_gpus, one.pool_size({"GPU": 8})) == (1.0, 3)
    cpu = plan(build_parser().parse_args(["analyze", "--ray"]))
    assert (cpu.num_cpus, cpu.num_gpus, cpu.pool_size({"CPU": 16.0})) == (2.0, 0.0, 8)
    # Paths given relative to the driver's directory reach the actors absolute.
    (tmp_path / "m.gguf").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    options = for_actors(build_parser().parse_args(["analyze", "--model", "m.gguf", "--ray"]), cpu)
    assert options.model == str(tmp_path / "m.gguf") and options.threads == 2


def test_without_ray_nothing_of_ray_or_pyarrow_is_imported_and_with_it_an_embedded_cluster_comes_and_goes(
        model, posts_csv, tmp_path):
    """In fresh processes: the local run imports neither; --ray without an address and without a Ray in the process
    starts an embedded cluster, writes the local run's rows, and shuts the cluster down."""
    pytest.importorskip("ray")
    script = ("import json, sys\nfrom mentalglm.cli import main\ncode = main(sys.argv[1:])\n"
              "ray = sys.modules.get('ray')\n"
              "print(json.dumps([code, 'ray' in sys.modules, 'pyarrow' in sys.modules,"
              " bool(ray and ray.is_initialized())]))\n")

    def run(*extra):
        done = subprocess.run([sys.executable, "-c", script, *analyze_args(model, "--file", str(posts_csv), *extra)],
                              capture_output=True, text=True, timeout=600)
        return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr

    local, on_ray = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    (code, ray_imported, arrow_imported, _), err = run("--out", str(local))
    assert (code, ray_imported, arrow_imported) == (1, False, False), err
    (code, ray_imported, _, still_up), err = run("--out", str(on_ray), "--ray")
    assert (code, ray_imported, still_up) == (1, True, False), err[-3000:]
    assert comparable(rows_of(on_ray)) == comparable(rows_of(local))
