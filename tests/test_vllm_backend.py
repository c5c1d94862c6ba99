"""vLLM settings -> engine arguments, `vllm serve` command and sampling parameters, without vLLM or a GPU."""

import importlib.util
import subprocess
import sys

import pytest

from mentalglm.llm.base import GenConfig, ModelUnavailable
from mentalglm.llm.registry import open_backend
from mentalglm.llm.vllm_backend import VLLMBackend, VLLMSettings, engine_args, sampling_kwargs, serve_command


def test_engine_args_for_an_adapter_on_two_gpus():
    args = engine_args(VLLMSettings(model="mentalglm-chat", adapter="/runs/stage2/adapter", tensor_parallel_size=2,
                                    max_model_len=2048))
    assert args["model"] == "zwzzz/MentalGLM-chat"  # registry name resolved to its HF id
    assert args["trust_remote_code"] is True  # GLM-4 remote code, from the registry entry
    assert args["tensor_parallel_size"] == 2 and args["pipeline_parallel_size"] == 1
    assert args["enable_prefix_caching"] is True and args["max_model_len"] == 2048
    assert args["enable_lora"] is True and args["max_lora_rank"] == 16 and args["max_loras"] == 1
    assert "distributed_executor_backend" not in args  # vLLM picks multiprocessing on one node


def test_engine_args_without_adapter_and_plain_models():
    args = engine_args(VLLMSettings(model="Qwen/Qwen2.5-Coder-1.5B-Instruct"))
    assert "enable_lora" not in args and args["trust_remote_code"] is False
    assert engine_args(VLLMSettings(model="THUDM/glm-4-9b-chat"))["trust_remote_code"] is True
    assert engine_args(VLLMSettings(model="THUDM/glm-4-9b-chat-hf"))["trust_remote_code"] is False
    assert engine_args(VLLMSettings(model="m", extra={"enforce_eager": True}))["enforce_eager"] is True


@pytest.mark.parametrize("settings, message", [
    (VLLMSettings(model="qwen2.5-coder-1.5b-instruct-q4"), "GGUF for llama.cpp"),
    (VLLMSettings(model="m", tensor_parallel_size=0), ">= 1"),
    (VLLMSettings(model="m", distributed_executor_backend="mpi"), "'ray' or 'mp'"),
])
def test_bad_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        engine_args(settings)


def test_serve_command_single_gpu_with_lora():
    cmd = serve_command(VLLMSettings(model="/models/glm-4-9b-chat", adapter="/runs/stage2/adapter",
                                     host="0.0.0.0", port=8001))
    assert cmd[:3] == ["vllm", "serve", "/models/glm-4-9b-chat"]
    flags = " ".join(cmd)
    assert "--host 0.0.0.0 --port 8001" in flags and "--served-model-name glm-4-9b-chat" in flags
    assert "--enable-lora --lora-modules mentalglm=/runs/stage2/adapter" in flags
    assert "--max-lora-rank 16" in flags and "--enable-prefix-caching" in flags and "--trust-remote-code" in flags
    assert "--max-loras" not in flags and "--api-key" not in flags  # a key on argv would show in `ps`


def test_serve_command_multi_node_ray():
    cmd = serve_command(VLLMSettings(model="zwzzz/MentalGLM-chat", tensor_parallel_size=8, pipeline_parallel_size=2,
                                     distributed_executor_backend="ray", served_model_name="mentalglm",
                                     enable_prefix_caching=False))
    flags = " ".join(cmd)
    assert "--tensor-parallel-size 8 --pipeline-parallel-size 2" in flags
    assert "--distributed-executor-backend ray" in flags and "--served-model-name mentalglm" in flags
    assert "--no-enable-prefix-caching" in flags and "--enable-lora" not in flags


def test_sampling_kwargs():
    assert sampling_kwargs(GenConfig(max_tokens=24, stop=("理由", "\n"))) == {
        "max_tokens": 24, "temperature": 0.0, "top_p": 1.0, "top_k": -1, "seed": 0, "repetition_penalty": 1.0,
        "stop": ["理由", "\n"]}
    assert sampling_kwargs(GenConfig(top_k=1))["top_k"] == 1 and "stop" not in sampling_kwargs(GenConfig())


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_without_vllm_the_backend_says_how_to_get_it():
    with pytest.raises(ModelUnavailable, match=r'pip install "mentalglm\[vllm\]"'):
        VLLMBackend(VLLMSettings(model="Qwen/Qwen2.5-Coder-1.5B-Instruct"))
    with pytest.raises(ModelUnavailable, match="GPU"):
        open_backend("vllm:Qwen/Qwen2.5-Coder-1.5B-Instruct", tensor_parallel_size=2)


def test_importing_the_module_does_not_import_vllm():
    code = "import sys, mentalglm.llm.vllm_backend, mentalglm.serve; print('vllm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cli_prints_the_vllm_command():
    out = subprocess.run([sys.executable, "-m", "mentalglm.cli", "serve", "--print-vllm-command", "--model",
                          "mentalglm-chat", "--adapter", "runs/stage2/adapter", "--tensor-parallel-size", "4",
                          "--token-env", "MY_TOKEN"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("vllm serve zwzzz/MentalGLM-chat ") and "--tensor-parallel-size 4" in out.stdout
    assert 'VLLM_API_KEY="$MY_TOKEN"' in out.stderr


def test_cli_vllm_command_for_a_local_copy_keeps_registry_settings():
    out = subprocess.run([sys.executable, "-m", "mentalglm.cli", "serve", "--print-vllm-command", "--model",
                          "mentalglm", "--weights", "/data/MentalGLM", "--served-model-name", "mentalglm"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("vllm serve /data/MentalGLM ") and "--trust-remote-code" in out.stdout
