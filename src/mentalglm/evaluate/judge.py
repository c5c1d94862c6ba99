"""An LLM judge for explanations, through any backend, with a fixed, documented rubric.

Each explanation is rated 0-3 on four criteria, with a one-sentence reason per criterion:

- consistent   与标签一致: the explanation argues for the predicted label(s), not another one.
- grounded     基于帖子:   it cites or paraphrases what the post actually says; nothing invented.
- professional 专业合理:   the reasoning uses the label's definition correctly, is cautious (no
               diagnosis), and would be acceptable to a mental-health professional.
- fluent       表达流畅:   clear, grammatical, concise text in the task's language.

Levels: 0 = not at all, 1 = weak, 2 = mostly, 3 = fully. The judge must answer one JSON object;
the parser also accepts it inside code fences or prose, with Chinese criterion names, and
"criterion: score" lines. An answer that lacks a criterion or a score in 0-3 is reported as
invalid with the reason; it is never given a default score.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass, field
from typing import Iterator, Sequence

from ..jsonl import BadLine, read_objects
from ..llm.base import Backend, GenConfig, Request, batches
from ..tasks import TaskSpec

CRITERIA = ("consistent", "grounded", "professional", "fluent")
ALIASES = {
    "consistent": ("consistent", "consistency", "一致", "与标签一致", "一致性", "标签一致"),
    "grounded": ("grounded", "grounding", "基于帖子", "有依据", "依据", "基于原文"),
    "professional": ("professional", "professionally sound", "专业", "专业合理", "专业性"),
    "fluent": ("fluent", "fluency", "流畅", "表达流畅", "流畅性"),
}
LEVELS_ZH = "0 = 完全不符合，1 = 较差，2 = 基本符合，3 = 完全符合"
RUBRIC_ZH = f"""评分标准（每项 0–3 分：{LEVELS_ZH}）：
- consistent（与标签一致）：解释是否支持给出的标签，而不是在论证别的标签。
- grounded（基于帖子）：解释是否引用或转述帖子中确实存在的内容，没有编造。
- professional（专业合理）：是否正确运用标签的定义，措辞审慎、不做诊断，专业人员能够认可。
- fluent（表达流畅）：是否清楚、通顺、简洁。"""
RUBRIC_EN = """Rubric (each 0-3: 0 = not at all, 1 = weak, 2 = mostly, 3 = fully):
- consistent: the explanation argues for the given label(s), not for another label.
- grounded: it cites or paraphrases what the post actually says; nothing is invented.
- professional: it applies the label's definition correctly, is cautious (no diagnosis), and a mental-health
  professional would accept it.
- fluent: clear, grammatical and concise."""
FORMAT = ('{"consistent": {"score": 0-3, "reason": "..."}, "grounded": {"score": 0-3, "reason": "..."}, '
          '"professional": {"score": 0-3, "reason": "..."}, "fluent": {"score": 0-3, "reason": "..."}}')
MAX_POST_CHARS = 1200
log = logging.getLogger("mentalglm")


@dataclass
class JudgeResult:
    id: str
    status: str  # ok | invalid
    scores: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    error: str = ""
    raw: str = ""
    model: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


def build_judge_request(spec: TaskSpec, post: str, labels: Sequence[str], explanation: str) -> Request:
    post = post[:MAX_POST_CHARS]
    if spec.language == "zh":
        shown = "、".join(spec.label(n).zh for n in labels) or "（无）"
        system = "你是一名心理健康领域的专家评审，负责评估模型对社交媒体帖子的分析解释。只输出JSON。"
        user = (f"任务：{spec.title}\n帖子：“{post}”\n模型给出的标签：{shown}\n模型给出的解释：{explanation}\n\n"
                f"{RUBRIC_ZH}\n\n只输出一个JSON对象，格式：{FORMAT}\n理由用一句中文。")
    else:
        shown = ", ".join(spec.label(n).en for n in labels) or "(none)"
        system = "You are an expert mental-health reviewer rating explanations of social-media posts. Output JSON only."
        user = (f"Task: {spec.title_en}\nPost: \"{post}\"\nLabel(s) given: {shown}\nExplanation given: "
                f"{explanation}\n\n{RUBRIC_EN}\n\nOutput one JSON object only: {FORMAT}")
    return Request(({"role": "system", "content": system}, {"role": "user", "content": user}))


def _canonical(key: str) -> str | None:
    k = key.strip().strip('"').strip().lower()
    for name, forms in ALIASES.items():
        if any(k == f.lower() or k.startswith(f.lower() + "（") or k.startswith(f.lower() + " (") for f in forms):
            return name
    return None


def _json_objects(text: str):
    """Every top-level {...} block in the text that parses as JSON, first to last."""
    depth, start = 0, None
    for i, ch in enumerate(text):
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0:
                try:
                    yield json.loads(text[start:i + 1])
                except json.JSONDecodeError:
                    continue


def _from_json(obj) -> tuple[dict, dict]:
    scores, reasons = {}, {}
    if not isinstance(obj, dict):
        return scores, reasons
    for key, value in obj.items():
        name = _canonical(str(key))
        if name is None:
            continue
        if isinstance(value, dict):
            score = value.get("score", value.get("分数", value.get("评分")))
            reason = value.get("reason", value.get("理由", ""))
        else:
            score, reason = value, ""
        scores[name], reasons[name] = score, str(reason or "")
    return scores, reasons


_LINE = re.compile(r"^\W*([A-Za-z\u4e00-\u9fff][\w\u4e00-\u9fff （）()]*?)\W*[:：]\s*(\d+(?:\.\d+)?)\s*(?:分|/\s*3)?"
                   r"\s*[，,。.;；:：\-—]*\s*(.*)$")


def _from_lines(text: str) -> tuple[dict, dict]:
    scores, reasons = {}, {}
    for line in text.splitlines():
        m = _LINE.match(line.strip())
        if m and (name := _canonical(m.group(1))) and name not in scores:
            scores[name], reasons[name] = m.group(2), m.group(3).strip()
    return scores, reasons


def _checked(scores: dict) -> tuple[dict[str, int], str]:
    missing = [c for c in CRITERIA if c not in scores]
    if missing:
        return {}, f"no score for {', '.join(missing)}"
    out = {}
    for c in CRITERIA:
        value = scores[c]
        try:
            number = float(value)
        except (TypeError, ValueError):
            return {}, f"score of {c} is not a number: {value!r}"
        if number != int(number) or not 0 <= number <= 3:
            return {}, f"score of {c} is {value!r}, not a whole number from 0 to 3"
        out[c] = int(number)
    return out, ""


def parse_judgement(raw: str) -> tuple[dict[str, int], dict[str, str], str]:
    """(scores, reasons, error): scores is empty and error says why when the answer is not usable."""
    text = (raw or "").strip()
    if not text:
        return {}, {}, "empty judge answer"
    candidates = [_from_json(obj) for obj in _json_objects(text)] + [_from_lines(text)]
    best_error, most = "no JSON object or 'criterion: score' lines found", 0
    for scores, reasons in candidates:
        checked, error = _checked(scores)
        if checked:
            return checked, {c: reasons.get(c, "") for c in CRITERIA}, ""
        if len(scores) > most:  # report the problem of the most complete attempt
            best_error, most = error, len(scores)
    return {}, {}, best_error


class Judge:
    def __init__(self, backend: Backend, max_tokens: int = 400):
        self.backend = backend
        self.config = GenConfig(max_tokens=max_tokens, temperature=0.0)

    def _fit(self, spec: TaskSpec, post: str, labels, explanation: str) -> Request:
        """Shorten the post until the prompt leaves room for the answer in the context window."""
        budget = self.backend.context_length - self.config.max_tokens - 16
        request = build_judge_request(spec, post, labels, explanation)
        while post and sum(self.backend.count_tokens(m["content"]) for m in request.messages) > budget:
            post = post[: int(len(post) * 0.8)]
            request = build_judge_request(spec, post, labels, explanation)
        return request

    def judge(self, spec: TaskSpec, items: Sequence[tuple[str, str, Sequence[str], str]]) -> list[JudgeResult]:
        """Rate (id, post, labels, explanation) items; one backend call so backends can batch.
        Items without an explanation are invalid without asking the model."""
        todo = [i for i, item in enumerate(items) if item[3].strip()]
        generations = self.backend.generate([self._fit(spec, *items[i][1:]) for i in todo], self.config) if todo else []
        by_index = dict(zip(todo, generations))
        results = []
        for i, (pid, _, _, _) in enumerate(items):
            if i not in by_index:
                results.append(JudgeResult(pid, "invalid", error="no explanation to judge", model=self.backend.name))
                continue
            raw = by_index[i].text
            scores, reasons, error = parse_judgement(raw)
            results.append(JudgeResult(pid, "ok" if scores else "invalid", scores, reasons, error, raw,
                                       self.backend.name))
        return results


    def stream(self, spec: TaskSpec, items: Sequence[tuple[str, str, Sequence[str], str]]) -> Iterator[JudgeResult]:
        """Judgements of many items as they finish, in groups of what the backend runs at once (written as they
        come, so a killed run resumes where it stopped). A backend failure stops the run: it is resumable."""
        for group in batches(items, self.backend.batch_size):
            yield from self.judge(spec, group)


def read_judgements(path) -> dict[str, JudgeResult]:
    """Judgements already in a file, by id, from the shared JSON-lines reader: a torn last line (a killed run) is
    cut off so appending is safe, and a damaged line is skipped with a warning (its post is judged again)."""
    rows, bad = read_objects(path)
    done: dict[str, JudgeResult] = {}
    for line, obj in rows:
        try:
            done[obj["id"]] = JudgeResult(**obj)
        except (KeyError, TypeError) as e:
            bad.append(BadLine(line, f"not a judgement ({e})"))
    for b in bad:
        log.warning("%s:%d: skipping a damaged line (%s)", path, b.line, b.reason)
    return done


def summarize(results: Sequence[JudgeResult]) -> dict:
    """Mean score per criterion over the valid judgements, and the share that was invalid."""
    valid = [r for r in results if r.status == "ok"]
    means = {c: (sum(r.scores[c] for r in valid) / len(valid) if valid else None) for c in CRITERIA}
    return {"n": len(results), "valid": len(valid),
            "invalid_rate": 1 - len(valid) / len(results) if results else 0.0, "means": means}
