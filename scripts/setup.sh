#!/usr/bin/env bash
# Set up mentalglm from nothing: a virtualenv in .venv with the package and its model parts.
#   scripts/setup.sh          # runtime
#   scripts/setup.sh dev      # + test tools (pytest, and Debian's chromium for the web-page tests)
# llama-cpp-python compiles from source on first install (about 7 minutes on 2 cores);
# pip's wheel cache makes later installs instant.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
if [ "${1:-}" = "dev" ]; then
  python -m pip install --quiet -e ".[dev]"
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
