"""Exports of a run: the PEFT adapter, a merged model on request, and a GGUF LoRA for llama.cpp.

The GGUF adapter is written by llama.cpp's own ``convert_lora_to_gguf.py``. It ships inside the
llama-cpp-python source distribution; the first export fetches that sdist with pip (same version as the
installed llama-cpp-python, so the file format matches the runtime) into ``<cache>/llama.cpp/`` and reuses it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from ..llm.catalog import cache_dir

log = logging.getLogger(__name__)

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


class ExportError(RuntimeError):
    pass


# ---------------------------------------------------------------- PEFT adapters
def combine_adapters(first: Path, second: Path, out: Path) -> Path:
    """One adapter equal to applying ``first`` then ``second`` (stage 2 trained on base + merged stage 1).

    LoRA deltas add up, so the sum is itself a LoRA of rank r1 + r2: A = [A1; A2], B = [s1*B1, s2*B2] with each
    adapter's scaling s = alpha / r folded into B (the combined scaling is 1). Exact, no re-training.
    """
    import torch
    from safetensors.torch import load_file, save_file

    configs = [json.loads((p / "adapter_config.json").read_text()) for p in (first, second)]
    weights = [load_file(str(p / "adapter_model.safetensors")) for p in (first, second)]
    for c in configs:
        if c.get("rank_pattern") or c.get("alpha_pattern") or c.get("use_rslora") or c.get("use_dora"):
            raise ExportError("combining adapters supports plain LoRA only (no rank/alpha patterns, rsLoRA, DoRA)")
    scales = [c["lora_alpha"] / c["r"] for c in configs]
    ranks = [c["r"] for c in configs]
    modules = sorted({k.rsplit(".lora_", 1)[0] for w in weights for k in w if ".lora_A." in k})
    combined = {}
    for m in modules:
        a_parts, b_parts = [], []
        for w, s, r in zip(weights, scales, ranks):
            a, b = w.get(f"{m}.lora_A.weight"), w.get(f"{m}.lora_B.weight")
            if a is None:  # module adapted by only one of the two: zeros of the other's rank
                ref_a = next(x[f"{m}.lora_A.weight"] for x in weights if f"{m}.lora_A.weight" in x)
                ref_b = next(x[f"{m}.lora_B.weight"] for x in weights if f"{m}.lora_B.weight" in x)
                a, b = ref_a.new_zeros(r, ref_a.shape[1]), ref_b.new_zeros(ref_b.shape[0], r)
            a_parts.append(a)
            b_parts.append(b * s)
        combined[f"{m}.lora_A.weight"] = torch.cat(a_parts, 0).contiguous()
        combined[f"{m}.lora_B.weight"] = torch.cat(b_parts, 1).contiguous()
    config = dict(configs[1])
    targets = [set(c["target_modules"]) if isinstance(c["target_modules"], list) else {c["target_modules"]}
               for c in configs]
    config.update(r=sum(ranks), lora_alpha=sum(ranks), target_modules=sorted(targets[0] | targets[1]))
    out.mkdir(parents=True, exist_ok=True)
    save_file(combined, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return out


def copy_adapter(src: Path, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for name in ADAPTER_FILES:
        shutil.copy2(src / name, out / name)
    return out


def export_merged(base_source: str, adapter: Path, out: Path, trust_remote_code: bool = False) -> Path:
    """Base + adapter merged into one HF model folder (loadable without peft, e.g. by vLLM without --enable-lora)."""
    from peft import PeftModel

    from .trainer import load_model, load_tokenizer

    model = PeftModel.from_pretrained(load_model(base_source, "fp32", trust_remote_code), str(adapter))
    model = model.merge_and_unload()
    model.save_pretrained(out)
    load_tokenizer(base_source, trust_remote_code).save_pretrained(out)
    return out


# ---------------------------------------------------------------- GGUF adapters
def llama_cpp_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("llama_cpp_python")
    except metadata.PackageNotFoundError as e:
        raise ExportError("llama-cpp-python is not installed; GGUF export converts for its runtime") from e


def converter_dir(download: bool = True) -> Path:
    """A folder with llama.cpp's convert scripts, ``conversion/`` and ``gguf-py/``, from the sdist."""
    version = llama_cpp_version()
    root = cache_dir() / "llama.cpp"
    target = root / version
    if (target / "convert_lora_to_gguf.py").is_file():
        return target
    sdist = root / f"llama_cpp_python-{version}.tar.gz"
    if not sdist.is_file():
        if not download:
            raise ExportError(f"llama.cpp converter not found in {target}")
        root.mkdir(parents=True, exist_ok=True)
        log.info("downloading the llama-cpp-python %s source distribution (about 75 MB) for its converter", version)
        cmd = [sys.executable, "-m", "pip", "download", f"llama-cpp-python=={version}", "--no-deps",
               "--no-binary", ":all:", "-d", str(root)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0 or not sdist.is_file():
            raise ExportError(f"could not download the llama-cpp-python sdist ({' '.join(cmd)}): "
                              f"{done.stderr.strip()[-400:]}\nDownload it on a connected machine and put "
                              f"{sdist.name} into {root}")
    prefix = f"llama_cpp_python-{version}/vendor/llama.cpp/"
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with tarfile.open(sdist) as tar:
        members = []
        for m in tar.getmembers():
            rel = m.name.removeprefix(prefix)
            if m.name.startswith(prefix) and (rel.startswith(("convert_", "conversion/", "gguf-py/"))) \
                    and (m.isfile() or m.isdir()):
                m.name = rel
                members.append(m)
        tar.extractall(tmp, members=members, filter="data")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def export_gguf(adapter: Path, base_source: str, out_file: Path, outtype: str = "f16",
                trust_remote_code: bool = False) -> Path:
    """Convert a PEFT adapter folder to a GGUF LoRA for the base model at ``base_source`` (folder or HF id)."""
    tools = converter_dir()
    cmd = [sys.executable, str(tools / "convert_lora_to_gguf.py"), "--outfile", str(out_file), "--outtype", outtype]
    if Path(base_source).is_dir():
        cmd += ["--base", str(base_source)]
    else:
        cmd += ["--base-model-id", base_source]
    if trust_remote_code:
        cmd.append("--trust-remote-code")
    cmd.append(str(adapter))
    env = dict(os.environ, PYTHONPATH=str(tools) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("NO_LOCAL_GGUF", None)  # use the gguf-py that matches the converter, not the installed package
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0 or not out_file.is_file():
        tail = "\n".join(done.stderr.strip().splitlines()[-8:])
        raise ExportError(f"convert_lora_to_gguf.py failed for {adapter}:\n{tail}")
    return out_file


def export_run_gguf(run_dir: Path, outtype: str | None = None) -> Path:
    """``mentalglm train export-gguf RUN``: convert ``RUN/export/adapter`` into ``RUN/export/adapter.gguf``."""
    import yaml

    from .models import resolve_base

    run_dir = Path(run_dir)
    adapter = run_dir / "export" / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        raise ExportError(f"{run_dir} has no finished adapter ({adapter}); finish the run first "
                          f"(`mentalglm train --config {run_dir / 'config.yaml'} --resume`)")
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    outtype = outtype or cfg.get("export", {}).get("gguf_outtype", "f16")
    return export_gguf(adapter, resolve_base(cfg["model"]), run_dir / "export" / "adapter.gguf", outtype,
                       bool(cfg.get("trust_remote_code")))
