"""A deterministic teacher for builder tests, and small fixture corpora in the sources' real formats.

``RuleTeacher`` is a ``Backend``: it reads the post and the gold label out of the teacher prompt that
``mentalglm.data.teacher`` writes and answers a grounded Chinese explanation, so a build through it
passes quality control. Markers in a post make it misbehave on purpose:

- ``【拒答】``: refuses on the first try (seed 13), answers properly when regenerated;
- ``【英文】``: always answers in English (dropped as not_chinese);
- ``【照抄】``: always answers the post itself (dropped as copies_post);
- ``【电话】``: always puts a phone number in the explanation (dropped as pii).

Served by ``servers.ChatServer`` it is a real OpenAI-compatible endpoint on loopback.
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

from mentalglm.llm.base import Backend, Generation

_POST = re.compile(r"帖子：“(.*)”\n正确标签：(.*)$", re.S)


class RuleTeacher(Backend):
    name = "rule-teacher"
    context_length = 4096

    def __init__(self, delay: float = 0.0, block_after: int | None = None):
        """``block_after``: calls after that many wait for ``release()`` (a build frozen mid-way, to kill it)."""
        self.delay = delay
        self.block_after = block_after
        self.calls = 0
        self._lock = threading.Lock()
        self._gate = threading.Event()

    def release(self) -> None:
        self.block_after = None
        self._gate.set()

    def _explain(self, post: str, gold: str, seed: int) -> str:
        names = re.findall(r"([^、（）]+)（", gold) or [gold]
        label = "、".join(n.strip() for n in names)
        if "【英文】" in post:
            return "The poster clearly shows this label because of the words used."
        if "【照抄】" in post:
            return post
        if "【拒答】" in post and seed == 13:
            return "抱歉，作为一个AI，我无法分析这篇帖子。"
        quote = post.replace("【拒答】", "").replace("【电话】", "")[:10]
        text = f"帖子中写到“{quote}”，这些原话说明发帖人的状态符合“{label}”的定义，因此判断为{label}。"
        if "【电话】" in post:
            text += "可拨打13812345678联系。"
        return text

    def generate(self, requests, config):
        out = []
        for request in requests:
            if self.block_after is not None and self.calls >= self.block_after:
                self._gate.wait(timeout=60)
            if self.delay:
                time.sleep(self.delay)
            prompt = request.messages[-1]["content"]
            m = _POST.search(prompt)
            text = self._explain(m.group(1), m.group(2), config.seed) if m else "无法解析提示。"
            with self._lock:
                self.calls += 1
            out.append(Generation(text=text, prompt_tokens=len(prompt), completion_tokens=len(text),
                                  finish_reason="stop"))
        return out

    def count_tokens(self, text: str) -> int:
        return len(text)

    def close(self) -> None:
        pass


# ------------------------------------------------------------------------------------------ fixture corpora
_WHO = ["我", "室友", "同桌", "表姐", "邻居", "老同学", "新同事", "舅舅", "学妹", "前任", "师兄", "网友"]
_WHAT = ["考试又没及格", "工作被领导批评", "和家里大吵一架", "失眠了整整一周", "养的猫走丢了", "论文被拒稿",
         "面试没有通过", "房租又涨了", "比赛输得很惨", "手机被偷了", "体检结果不太好", "朋友聚会没叫我"]
_FEEL = ["心里堵得慌", "觉得好累", "不知道该怎么办", "有点想哭", "整个人都很烦", "感觉没有希望",
         "只想一个人待着", "越想越难受", "真的撑不住了", "脑子一片空白", "一点都不想动", "很想逃离这里"]


def synthetic_post(k: int, marker: str = "") -> str:
    """Distinct short Chinese posts (no two are near duplicates)."""
    return (f"{marker}{_WHO[k % 12]}说第{k}天了，{_WHAT[(k * 5) % 12]}，"
            f"{_FEEL[(k * 7) % 12]}，编号{k * 37 % 1000}。")


def write_sos4k(root: Path, train: list[tuple[str, int, str]], val: list[tuple[str, int, str]]) -> Path:
    """SOS-4K TSV (UTF-8 BOM; header comment, myLabel, explain) under ``root/sos4k``."""
    folder = root / "sos4k"
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train), ("val", val)):
        lines = ["comment\tmyLabel\texplain"] + [f"{c}\t{lab}\t{e}" for c, lab, e in rows]
        (folder / f"{name}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8-sig")
    return root


def write_socialcd3k(root: Path, rows: list[tuple[str, list[str]]]) -> Path:
    from mentalglm.tasks import get_task

    names = get_task("cognitive_distortion").label_names
    folder = root / "socialcd3k"
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(names + ["内容"])]
    lines += ["\t".join(["1" if n in labels else "0" for n in names] + [post]) for post, labels in rows]
    (folder / "train.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8-sig")
    return root


def sos4k_rows(n_train: int = 12, n_val: int = 4, explain: bool = True) -> tuple[list, list]:
    rows = []
    for k in range(n_train + n_val):
        level = k % 11
        post = synthetic_post(k)
        text = (f"帖子中提到“{post[2:9]}”，发帖人表达了痛苦但描述有限，根据量表属于{level}级。" if explain else "")
        rows.append((post, level, text))
    return rows[:n_train], rows[n_train:]


def write_build_folder(root: Path, validation: int = 0) -> Path:
    """A small build folder (``<task>/<split>.jsonl`` instruction records), as `mentalglm data build` writes."""
    from mentalglm.tasks import get_task

    tasks = {"suicide_risk": ["低自杀风险", "高自杀风险"], "emotion": ["积极", "悲伤", "愤怒"]}
    for task, labels in tasks.items():
        spec = get_task(task)
        (root / task).mkdir(parents=True)
        for split, n in (("train", 12), ("validation", validation)):
            if not n:
                continue
            with open(root / task / f"{split}.jsonl", "w", encoding="utf-8") as f:
                for k in range(n):
                    label = labels[k % len(labels)]
                    post = f"第{k}篇{task}{split}测试帖子，今天发生了一些事情。"
                    explanation = f"帖子中写到“第{k}篇”，符合{label}。"
                    f.write(json.dumps({"id": f"{task}-{split}-{k}", "task": task, "split": split,
                                        "instruction": spec.instruction_prompt(post), "input": "",
                                        "output": spec.render_answer([label], explanation), "labels": [label],
                                        "explanation": explanation, "source": "fixture", "teacher": "t",
                                        "prompt_hash": "h"}, ensure_ascii=False) + "\n")
    return root
