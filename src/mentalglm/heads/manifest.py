"""The files list of a heads folder's ``manifest.json``: every file with its sha256, checked at load (``load_heads``)."""

from __future__ import annotations

import json
from pathlib import Path

from ..files import file_sha256


def list_files(folder: Path, names: list[str], replace_prefix: str = "", **fields) -> None:
    """List ``names`` (paths inside ``folder``) with their sha256 in its manifest, after dropping the entries under
    ``replace_prefix`` (a subfolder written anew); ``fields`` are set at the manifest's top level."""
    path = Path(folder) / "manifest.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    files = {k: v for k, v in manifest["files"].items() if not (replace_prefix and k.startswith(replace_prefix))}
    files.update({name: file_sha256(Path(folder) / name) for name in names})
    path.write_text(json.dumps({**manifest, **fields, "files": files}, ensure_ascii=False, indent=1), encoding="utf-8")
