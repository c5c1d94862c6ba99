"""Zero-shot and few-shot LLM predictions through any backend, written as resumable predictions JSONL.

Zero-shot is ``mentalglm.analyze.Analyzer`` itself. Few-shot puts k training examples, drawn
stratified by label with a fixed seed, before the post as earlier chat turns: the post as the
user turn, its gold answer as the assistant turn, written with the task spec
(``render_answer`` where the corpus has a reference explanation, else the label sentence alone,
so that no explanation is made up for the model to imitate).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from ..analyze import Analysis, AnalyzeConfig, Analyzer, completed_pairs
from ..data.records import Example
from ..data.splits import stratified_sample
from ..inputs import Post
from ..jsonl import write_rows
from ..llm.base import Backend, Request
from ..prompts import SYSTEM_EN, SYSTEM_ZH, build_request, task_instructions
from ..tasks import TaskSpec, get_task

MAX_EXAMPLE_CHARS = 300  # keeps k examples inside a small model's context


def _post_turn(spec: TaskSpec, text: str) -> str:
    return f"帖子：“{text}”" if spec.language == "zh" else f'Post: "{text}"'


class FewShotAnalyzer(Analyzer):
    """An Analyzer whose prompts carry solved examples as earlier chat turns."""

    def __init__(self, backend: Backend, config: AnalyzeConfig, shots: dict[str, Sequence[Example]]):
        super().__init__(backend, config)
        self.shots = {get_task(task).name: list(examples) for task, examples in shots.items()}

    def _answer(self, spec: TaskSpec, example: Example) -> str:
        if self.config.explain and example.explanation:
            return spec.render_answer(example.labels, example.explanation)
        return spec.label_sentence(example.labels)

    def request(self, spec: TaskSpec, text: str) -> Request:
        examples = self.shots.get(spec.name)
        base = build_request(spec, text, self.config.style)
        if not examples:
            return base
        turns: list[dict] = []
        if self.config.style == "instruction":
            ask = spec.instruction_prompt
        else:
            system = SYSTEM_ZH if spec.language == "zh" else SYSTEM_EN
            turns.append({"role": "system", "content": f"{system}\n\n{task_instructions(spec)}"})
            ask = lambda t: _post_turn(spec, t)  # noqa: E731
        for ex in examples:
            turns += [{"role": "user", "content": ask(ex.text[:MAX_EXAMPLE_CHARS])},
                      {"role": "assistant", "content": self._answer(spec, ex)}]
        turns.append({"role": "user", "content": ask(text)})
        return Request(tuple(turns), base.answer_prefix)


def few_shot_examples(train: Sequence[Example], k: int, seed: int = 13) -> list[Example]:
    """k training examples in proportion to their label strata (seed fixed, so runs are comparable)."""
    return stratified_sample(train, k, seed=seed)


def make_analyzer(backend: Backend, task: str, style: str = "zeroshot", explain: bool = True, max_tokens: int = 160,
                  shots: int = 0, train: Sequence[Example] = (), seed: int = 13, **heads) -> Analyzer:
    """``heads``: the label-heads fields of AnalyzeConfig (heads folder, risk_threshold)."""
    config = AnalyzeConfig(tasks=(get_task(task).name,), explain=explain, max_tokens=max_tokens, style=style, **heads)
    if shots <= 0:
        return Analyzer(backend, config)
    if not train:
        raise ValueError(f"few-shot needs training examples of task {task!r}")
    return FewShotAnalyzer(backend, config, {task: few_shot_examples(train, shots, seed)})


def predict_to_file(analyzer: Analyzer, examples: Sequence[Example], out: str | Path,
                    on_result: Callable[[Analysis], None] | None = None) -> int:
    """Append predictions for the examples not yet in ``out`` (resume); returns how many were run."""
    out = Path(out)
    done = completed_pairs(out)
    task = analyzer.specs[0].name
    todo = [Post(e.id, e.text) for e in examples if (e.id, task) not in done]
    write_rows(analyzer.stream(todo), out, on_result)
    return len(todo)
