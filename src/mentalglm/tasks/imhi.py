"""English IMHI tasks (MentaLLaMA), the stage-1 training data.

Questions and label sentences are exactly those of the released CSVs
(github.com/SteveKGYang/MentalLLaMA, ``query`` / ``gpt-3.5-turbo`` columns). Irf and MultiWD ask
about one aspect per row (the aspect is in the question, the label is yes/no), so their
records carry the row's own question in ``Example.meta["question"]``.
"""

from __future__ import annotations

from .spec import Label, TaskSpec, register

SOURCE = "IMHI (github.com/SteveKGYang/MentalLLaMA, MIT)"


def _yes_no(condition: str, yes: str, no: str, yes_syn=(), no_syn=()) -> tuple[Label, Label]:
    return (
        Label("yes", "是", "yes", f"the post shows {condition}", tuple(yes_syn), sentence=yes),
        Label("no", "否", "no", f"the post does not show {condition}", tuple(no_syn), sentence=no),
    )


def _causes(prefix: str, items: list[tuple[str, str]], none_sentence: str, none_name: str) -> tuple[Label, ...]:
    labs = [Label(none_name, none_name, none_name, "", (), sentence=none_sentence)]
    for name, phrase in items:
        labs.append(Label(name, name, name, "", (phrase,), sentence=f"{prefix} {phrase}."))
    return tuple(labs)


def _english(name: str, title: str, question: str, labels, aliases=(), **kw) -> TaskSpec:
    return register(
        TaskSpec(name=name, language="en", title=title, title_en=title, question=question, labels=labels,
                 family="imhi", source=SOURCE, metrics=("accuracy", "weighted_f1", "macro_f1"), **kw),
        aliases=aliases,
    )


DR = _english(
    "DR", "Depression detection (DR)", "Does the poster suffer from depression?",
    _yes_no("depression", "Yes, the poster suffers from depression.", "No, the poster does not suffer from depression.",
            ("suffers from depression", "is depressed"), ("does not suffer from depression", "doesn't suffer from depression",
                                                         "is not depressed")),
    aliases=("depression",),
)
DREADDIT = _english(
    "dreaddit", "Stress detection (Dreaddit)", "Does the poster suffer from stress?",
    _yes_no("stress", "Yes, the poster suffers from stress.", "No, the poster does not suffer from stress.",
            ("suffers from stress", "is stressed"), ("does not suffer from stress", "doesn't suffer from stress",
                                                    "is not stressed")),
)
LONELINESS = _english(
    "loneliness", "Loneliness detection", "Does the poster suffer from loneliness?",
    _yes_no("loneliness", "Yes, the poster suffers from loneliness.", "No, the poster does not suffer from loneliness.",
            ("suffers from loneliness", "is lonely"), ("does not suffer from loneliness",
                                                      "doesn't suffer from loneliness", "is not lonely")),
)
IRF = _english(
    "Irf", "Interpersonal risk factors (Irf)", "Does the post show risk of thwarted belongingness?",
    _yes_no("this interpersonal risk", "Yes, the post shows this risk.", "No, the post does not show this risk.",
            ("shows this risk",), ("does not show this risk", "doesn't show this risk")),
    description="One row per (post, aspect); aspects: thwarted belongingness, perceived burdensomeness.",
)
MULTIWD = _english(
    "MultiWD", "Wellness dimensions (MultiWD)", "Does the social wellness dimension exist in the post?",
    _yes_no("this wellness dimension", "Yes, this wellness dimension exists in the post.",
            "No, this wellness dimension does not exist in the post.", ("this wellness dimension exists",),
            ("this wellness dimension does not exist", "does not exist in the post")),
    description="One row per (post, dimension): spiritual, physical, intellectual, social, vocational, emotional.",
)
SAD = _english(
    "SAD", "Stress cause (SAD)", "What is the stress cause of this post?",
    _causes(
        "This post shows the stress cause related to",
        [("school", "school"), ("financial problem", "financial problem"), ("family issues", "family issues"),
         ("social relationships", "social relationships"), ("work", "work"), ("health issues", "health issues"),
         ("emotion turmoil", "emotion turmoil"), ("everyday decision making", "everyday decision making")],
        "This post shows other stress causes.", "other",
    ),
)
CAMS = _english(
    "CAMS", "Depression cause (CAMS)", "What cause of depression does this post show?",
    _causes(
        "This post shows causes of depression related to",
        [("bias or abuse", "bias or abuse"), ("jobs and career", "jobs and career"), ("medication", "medication"),
         ("relationship", "relationship"), ("alienation", "alienation")],
        "This post shows no causes of depression.", "none",
    ),
)
TSID = register(
    TaskSpec(
        name="T-SID", language="en", title="Suicide and mental disorder (T-SID)", title_en="T-SID",
        question="What mental disorder does this post show?", family="imhi", source=SOURCE,
        labels=(
            Label("none", "none", "no mental disorders", "", ("no mental disorder",), sentence="This post shows no mental disorders."),
            Label("suicide or self-harm tendency", "suicide or self-harm tendency", "suicide or self-harm tendency", "",
                  ("self-harm", "suicide tendency"), sentence="This post shows suicide or self-harm tendency."),
            Label("depression", "depression", "depression", "", (), sentence="This post shows depression."),
            Label("PTSD", "PTSD", "PTSD", "", ("post-traumatic stress disorder",), sentence="This post shows PTSD."),
        ),
    ),
    aliases=("t-sid", "tsid"),
)
SWMH = _english(
    "SWMH", "Mental disorders (SWMH)", "What mental disorder symptoms does this post show?",
    _causes(
        "This post shows mental disorder symptoms related to",
        [("anxiety", "anxiety"), ("bipolar disorder", "bipolar disorder"), ("depression", "depression"),
         ("suicide", "suicide")],
        "This post shows no mental disorder symptoms.", "none",
    ),
    aliases=("swmh",),
)

# File stems of the released CSVs -> task names.
IMHI_FILES = {"DR": "DR", "dreaddit": "dreaddit", "SAD": "SAD", "Irf": "Irf", "MultiWD": "MultiWD",
              "CAMS": "CAMS", "loneliness": "loneliness", "t-sid": "T-SID", "swmh": "SWMH"}
