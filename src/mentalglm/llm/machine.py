"""What this machine offers a local model: its cores, and the memory that holds sequences' KV caches.

The registry's machine-chosen defaults (``--threads``, ``--parallel``) are these; the llama.cpp backend falls back
on ``cores`` when it is built directly without a thread count."""

from __future__ import annotations

import os

# KV cache a token costs, f16, for the GGUF models the project runs (Qwen2.5 1.5B: 28 KB; GLM-4-9B: 40 KB).
KV_BYTES_PER_TOKEN = 32 * 1024


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def parallel_for(n_ctx: int = 4096) -> int:
    """Sequences to decode together: as many as a tenth of the available memory holds a KV cache of ``n_ctx``
    tokens for, as a power of two from 1 to 32. On a CPU a step of one token for each of 16-32 sequences costs
    little more than reading the weights once (docs/results-service.md), so more is faster up to there, while
    each sequence holds its cache."""
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not Linux
        return 4
    fits = int(available / 10 / (max(1, n_ctx) * KV_BYTES_PER_TOKEN))
    return max(1, min(32, 1 << max(0, fits.bit_length() - 1)))
