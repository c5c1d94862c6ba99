#!/usr/bin/env bash
# Set up mentalglm from nothing: a virtualenv in .venv with the package and its model parts.
#   scripts/setup.sh          # the base install: analyze, serve, eval on the default model, the heads (docs/install.md)
#   scripts/setup.sh dev      # + what the tests need: test tools and the train, cluster and parquet extras,
#                             #   and Debian's chromium for the web-page tests
# llama-cpp-python compiles from source on first install (about 7 minutes on 2 cores);
# pip's wheel cache makes later installs fast.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
if [ "${1:-}" = "dev" ]; then
  # torch (train extra): PyPI's wheel is the CUDA build (several GB more). Without an NVIDIA GPU, take the CPU
  # build from PyTorch's index first, when that index is reachable; the pin is the train extra's.
  torch_cpu_index=https://download.pytorch.org/whl/cpu
  if ! command -v nvidia-smi >/dev/null 2>&1 \
      && python -c "import urllib.request; urllib.request.urlopen('$torch_cpu_index/torch/', timeout=10)" 2>/dev/null; then
    torch_pin=$(python -c "import tomllib; print(next(r for r in tomllib.load(open('pyproject.toml', 'rb'))
                ['project']['optional-dependencies']['train'] if r.startswith('torch')))")
    python -m pip install --quiet "$torch_pin" --index-url "$torch_cpu_index"
  fi
  python -m pip install --quiet -e ".[dev,train,cluster,parquet]"
  if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-wqy-microhei >/dev/null) \
      || echo "warning: could not install chromium; browser tests will be skipped" >&2
  fi
  # llama.cpp's LoRA converter (from the llama-cpp-python sdist on PyPI), for GGUF adapter export and its test.
  python -c "from mentalglm.train.export import converter_dir; converter_dir()" >/dev/null \
    || echo "warning: could not fetch llama.cpp's converter; the GGUF-export test will be skipped" >&2
else
  python -m pip install --quiet -e .
fi
