"""What ``mentalglm heads train`` builds from: the base model, the posts, the search space.

Sized for a free 2-core CPU: reading one hidden state of the 1.5B base costs about 0.7 s, so the
larger corpora are stratified samples (seed 13) of their training split; the n-gram part of each
head always trains on the whole training split, which costs seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..data.records import Example
from ..data.sources import task_splits
from ..data.splits import stratified_sample


@dataclass(frozen=True)
class Recipe:
    name: str = "mentalglm-mini"
    base: str = "qwen2.5-coder-1.5b-instruct-q4"
    tasks: tuple[str, ...] = ("suicide_risk", "cognitive_distortion", "emotion", "suicide_risk_levels")
    # Training posts whose hidden state is read, per task (None: the whole training split).
    state_posts: dict = field(default_factory=lambda: {
        "suicide_risk": None, "cognitive_distortion": None, "emotion": 500, "suicide_risk_levels": 400})
    # How each task reads a post's state (features.POOLS). Cognitive distortion adds the mean over the post's
    # tokens: its rarer labels need what the last position forgets (validation macro F1 32.1 -> 34.7, micro
    # 69.1 -> 70.2; docs/model-card.md). It doubles the state and the time to read it on long posts.
    state_pool: dict = field(default_factory=lambda: {"cognitive_distortion": "last+mean"})
    # The validation posts scored in the manifest: the same stratified sample the benchmarks use.
    validation_sample: int = 200
    seed: int = 13
    folds: int = 5  # cross-fitting: every choice (C, stacker, thresholds, risk threshold) is made out of fold
    C_grid: tuple[float, ...] = (0.001, 0.003, 0.01, 0.03, 0.1)
    # One value: what out-of-fold log loss chose from (3, 10, 30) on the two largest corpora in an earlier run
    # (the suicide corpora chose 30); a grid costs five fits a value on the largest corpus.
    ngram_C_grid: tuple[float, ...] = (10.0,)
    # The suicide-risk flag: the threshold on P(high) whose out-of-fold high-risk recall is this. Above the 0.90
    # the flag promises, because recall on new posts scatters around the out-of-fold figure (about ±5 points).
    risk_recall: float = 0.95

    def state_examples(self, task: str, root=None) -> list[Example]:
        train = task_splits(task, root)["train"]
        n = self.state_posts.get(task)
        return train if n is None else stratified_sample(train, n, seed=self.seed)

    def pool(self, task: str) -> str:
        return self.state_pool.get(task, "last")

    def validation_examples(self, task: str, root=None) -> list[Example]:
        return stratified_sample(task_splits(task, root)["validation"], self.validation_sample, seed=self.seed)
