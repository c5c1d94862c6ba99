"""Shared fixtures: tiny random models built once per session into a temporary folder (no cache, no network)."""

import os
import sys

# Before anything imports huggingface_hub, which reads these once: tests must never reach for the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models: one torch thread is faster, and much faster on a busy 2-core machine (no spinning OpenMP
# workers). Set OMP_NUM_THREADS to override, e.g. for opt-in real-model tests.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # helpers: tiny_models, servers

from tiny_models import build_tiny_gguf, build_tiny_hf_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_hf_model_dir(tmp_path_factory):
    """A random-init tiny Qwen2 folder (config, safetensors, tokenizer with a ChatML template)."""
    return build_tiny_hf_model(tmp_path_factory.mktemp("tiny-hf") / "tiny-qwen2")


@pytest.fixture(scope="session")
def tiny_gguf_path(tmp_path_factory):
    """A random-weight llama-architecture GGUF with an embedded BPE tokenizer and chat template."""
    return build_tiny_gguf(tmp_path_factory.mktemp("tiny-gguf") / "tiny.gguf")


@pytest.fixture(scope="session")
def tiny_hf_backend(tiny_hf_model_dir):
    """An ``HFBackend`` on the tiny folder, shared: loading is cheap, but importing the model code is not."""
    from mentalglm.llm.hf import HFBackend

    backend = HFBackend(str(tiny_hf_model_dir), batch_size=4)
    yield backend
    backend.close()
