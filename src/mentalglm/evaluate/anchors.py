"""Published numbers to read our scores against (DESIGN.md §5).

They are on the publishers' held-back test splits (and, for emotion, another domain and a
larger training set): reference points on the validation split, and on `--split test` comparable
only where the test file and the training data are the publishers'.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Anchor:
    task: str
    system: str
    metric: str  # a key of ScoreCard.metrics
    value: float  # in percent
    note: str
    source: str
    decimals: int = 2  # as published: 76.10 stays 76.10, 0.739 becomes 73.9

    @property
    def shown(self) -> str:
        return f"{self.value:.{self.decimals}f}"


QI_2023 = ("Qi et al. 2023, supervised vs. LLM benchmarks on Chinese cognitive distortions and suicide risk, "
           "github.com/HongzhiQ/SupervisedVsLLM-EfficacyEval")

# SOS-1K is the dataset paper of the fine-grained scale, not the supervised-vs-LLM benchmark above.
QI_2024_SOS1K = ("Qi et al. 2024, SOS-1K: a fine-grained suicide risk classification dataset for Chinese social "
                 "media analysis, IEEE SMC 2024, doi:10.1109/SMC54092.2024.10831921")

ANCHORS = (
    Anchor("cognitive_distortion", "best supervised model (literature)", "micro_f1", 76.10,
           "SocialCD-3K official test split", QI_2023),
    Anchor("suicide_risk", "best supervised model (literature)", "high_risk_f1", 82.76,
           "SOS-HL-1K official test split, F1 of the high-risk class", QI_2023),
    Anchor("suicide_risk", "best supervised model, SOS-1K (literature)", "high_risk_f1", 88.39,
           "F1 on the SOS-1K high/low task (a different split)", QI_2024_SOS1K),
    Anchor("emotion", "bert-base-chinese (literature)", "macro_f1", 73.9,
           "SMP2020-EWECT usual test, trained on the full usual train set (not available here; our split is "
           "from the virus domain)", "github.com/BrownSweater/BERT_SMP2020-EWECT", decimals=1),
)


def anchors_for(task: str) -> list[Anchor]:
    return [a for a in ANCHORS if a.task == task]
