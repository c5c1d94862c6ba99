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
    # The base's blocks whose output the heads read (None: all of them). A copy of the base cut after them
    # (llm/truncate.py) returns that block's state and costs layers/28 of the full prompt pass. Block 16 with every
    # training state was measured and not shipped: no significant gain on validation, ordinary-post emotion 4 points
    # lower (docs/model-card.md, "Tried and not shipped").
    layers: int | None = None
    # In the order their states are read: cognitive distortion last, the longest and the least changed.
    tasks: tuple[str, ...] = ("suicide_risk", "emotion", "suicide_risk_levels", "cognitive_distortion")
    # Training posts whose hidden state is read, per task: None (the whole training split), a number (a stratified
    # sample) or {source: None or a number} (each source on its own). Emotion reads every ordinary post (the
    # domain users send; 1,602 of SMP2020's usual file after the validation carve) beside 300 epidemic ones.
    state_posts: dict = field(default_factory=lambda: {
        "suicide_risk": None, "cognitive_distortion": None, "suicide_risk_levels": 400,
        "emotion": {"smp2020_ewect/usual_eval": None, "smp2020_ewect/virus_train": 300}})
    # How each task reads a post's state (features.POOLS). Cognitive distortion adds the mean over the post's
    # tokens: its rarer labels need what the last position forgets (validation macro F1 32.1 -> 34.7, micro
    # 69.1 -> 70.2; docs/model-card.md). It doubles the state and the time to read it on long posts.
    state_pool: dict = field(default_factory=lambda: {"cognitive_distortion": "last+mean"})
    # The validation posts scored in the manifest, per task (same forms as ``state_posts``; tasks not named: 400
    # or all there are): the same samples the benchmarks use. Gains of a few points need more than 200 posts: every
    # validation post where the split is small enough to read (distortion 546, levels 636, risk 199, ordinary emotion).
    validation_sample: dict = field(default_factory=lambda: {
        "cognitive_distortion": None, "suicide_risk_levels": None,
        "emotion": {"smp2020_ewect/usual_eval": None, "smp2020_ewect/virus_train": 200}})
    seed: int = 13
    folds: int = 5  # cross-fitting: every choice (C, stacker, thresholds, risk threshold) is made out of fold
    C_grid: tuple[float, ...] = (0.001, 0.003, 0.01, 0.03, 0.1)
    # One value: what out-of-fold log loss chose from (3, 10, 30) on the two largest corpora in an earlier run
    # (the suicide corpora chose 30); a grid costs five fits a value on the largest corpus.
    ngram_C_grid: tuple[float, ...] = (10.0,)
    # The suicide-risk flag: the threshold on P(high) whose out-of-fold high-risk recall is this. Above the 0.90
    # the flag promises, because recall on new posts scatters around the out-of-fold figure (about ±5 points).
    risk_recall: float = 0.95
    # Tasks whose state model weighs its classes by inverse frequency (rare emotions, rare levels).
    balanced: tuple[str, ...] = ()
    # Single-label tasks whose decision is fitted out of fold for their headline metric (fit.decision_weights).
    decision_metric: dict = field(default_factory=dict)
    # Tasks whose labels are a scale and whose state part is fitted as one (fit._Linear, kind "ordinal").
    ordinal: tuple[str, ...] = ()
    # The C grid of an ordinal state part (its ridge penalty is 1 / C).
    ordinal_C_grid: tuple[float, ...] = (0.0003, 0.001, 0.003, 0.01, 0.03)
    # A classifier run (train/classifier.py) whose adapted small model the heads read instead of the base: every
    # task's state is its state of the post alone (pool "post"), the state part is its trained head's scores, and
    # the posts with a state are those it held out (the stacker and thresholds are fitted on posts it never saw).
    # None: the frozen base, as above.
    classifier: str | None = None
    # With a classifier, the tasks whose heads read it (None: every task); the others read the frozen base as above.
    # A folder of both reads each post twice, the small model once for all its tasks and the base once a task.
    classifier_tasks: tuple[str, ...] | None = None
    # The C grid of a classifier's state part: a logistic model of its head's few scores, not of 1,536 coordinates.
    classifier_C_grid: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)

    def reader(self, task: str) -> str:
        """The model whose states ``task``'s head reads: "classifier" or "base"."""
        return "classifier" if self.classifier and (self.classifier_tasks is None or task in self.classifier_tasks) \
            else "base"

    def state_examples(self, task: str, root=None) -> list[Example]:
        if self.reader(task) == "classifier":
            from .classifier import held_out

            return held_out(self.classifier, task, root)
        return self._sample(task_splits(task, root)["train"], self.state_posts.get(task))

    def pool(self, task: str) -> str:
        return "post" if self.reader(task) == "classifier" else self.state_pool.get(task, "last")

    def validation_examples(self, task: str, root=None) -> list[Example]:
        return self._sample(task_splits(task, root)["validation"], self.validation_sample.get(task, 400))

    def _sample(self, examples: list[Example], n) -> list[Example]:
        if isinstance(n, dict):
            return [e for source, k in n.items() for e in self._sample([x for x in examples if x.source == source], k)]
        return list(examples) if n is None else stratified_sample(examples, n, seed=self.seed)
