"""A data root in the publishers' formats, with made-up posts: the four Chinese corpora's training files and,
optionally, their test files (which are not on the development machine).

Same file names, encodings, headers and field layouts as the real files (UTF-8 with BOM, tab-separated without
quoting; SMP2020 as a JSON array with English labels). The posts are generated from a few words per label, so a
character n-gram model learns them in a fraction of a second and scores well above chance.

    from synthetic_corpora import write_corpora
    root = write_corpora(tmp_path / "data", test=True)   # --data-root root, --split test works
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from mentalglm.tasks import get_task

CUES = {  # words that make a label learnable
    "cognitive_distortion": ["永远", "所有人", "只看到", "不算什么", "他们肯定觉得", "一定会失败", "天塌了",
                             "我感觉所以", "必须", "废物", "都怪我", "都怪他们"],
    "suicide_risk": ["有点累但还好", "不想活了准备好了"],
    "suicide_risk_levels": ["上班好烦", "有些痛苦", "非常痛苦", "痛苦到极点", "想过死", "很想死", "在计划",
                            "买好了药", "定了日子", "这几天就走", "已经在做了"],
    "emotion": ["开心", "气死了", "难过", "害怕", "没想到", "开会"],
}
FILLER = ["今天", "最近", "晚上", "在学校", "上班时", "和朋友", "一个人", "下雨了", "周末", "回家路上"]


def _posts(task: str, n: int, seed: int, kind: str) -> list[tuple[tuple[str, ...], str]]:
    spec, rng = get_task(task), random.Random(f"{task}-{kind}-{seed}")
    out = []
    for i in range(n):
        k = i % len(spec.labels)
        labels = [spec.label_names[k]]
        if spec.multi_label and i % 5 == 0:
            labels.append(spec.label_names[(k + 3) % len(spec.labels)])
        words = [CUES[task][spec.label_names.index(lab)] for lab in labels]
        text = "".join(rng.sample(FILLER, 3)) + "，" + "，".join(words) + f"。{kind}第{i}条{rng.randint(0, 10**6)}"
        out.append((tuple(labels), text))
    return out


def _tsv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(header), *("\t".join(r) for r in rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8-sig")


def _socialcd3k(path: Path, n: int, kind: str) -> None:
    names = get_task("cognitive_distortion").label_names
    rows = [[*("1" if name in labels else "0" for name in names), text]
            for labels, text in _posts("cognitive_distortion", n, 1, kind)]
    _tsv(path, [*names, "内容"], rows)


def _sos_hl_1k(path: Path, n: int, kind: str) -> None:
    names = get_task("suicide_risk").label_names
    rows = [[str(i), str(names.index(labels[0])), text]
            for i, (labels, text) in enumerate(_posts("suicide_risk", n, 2, kind))]
    _tsv(path, ["id", "label", "comment"], rows)


def _sos4k(path: Path, n: int, kind: str) -> None:
    rows = [[text, labels[0], f"帖子提到“{text[-12:-6]}”，属于等级{labels[0]}的表现。"]
            for labels, text in _posts("suicide_risk_levels", n, 3, kind)]
    _tsv(path, ["comment", "myLabel", "explain"], rows)


def _smp2020(path: Path, n: int, kind: str) -> None:
    spec = get_task("emotion")
    items = [{"id": i, "content": text, "label": spec.label(labels[0]).en}
             for i, (labels, text) in enumerate(_posts("emotion", n, 4, kind), 1)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")


def write_corpora(root: Path, test: bool = False, n: int = 120, n_test: int = 36) -> Path:
    """Training (and, with ``test``, test) files of the four Chinese corpora under ``root``."""
    _socialcd3k(root / "socialcd3k" / "train.tsv", n, "train")
    _sos_hl_1k(root / "sos_hl_1k" / "train.tsv", n, "train")
    _sos4k(root / "sos4k" / "train.tsv", n, "train")
    _sos4k(root / "sos4k" / "val.tsv", n // 4, "val")
    for name in ("virus_train", "virus_eval", "usual_eval"):
        _smp2020(root / "smp2020_ewect" / f"{name}.json", n if name.endswith("train") else n // 4, name)
    if test:
        _socialcd3k(root / "socialcd3k" / "test.tsv", n_test, "test")
        _sos_hl_1k(root / "sos_hl_1k" / "test.tsv", n_test, "test")
        _sos4k(root / "sos4k" / "test.tsv", n_test, "test")
        _smp2020(root / "smp2020_ewect" / "usual_test.json", n_test, "usual_test")
        _smp2020(root / "smp2020_ewect" / "virus_test.json", n_test, "virus_test")
    return root
