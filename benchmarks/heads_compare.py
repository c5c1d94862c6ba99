"""Two heads folders and the n-gram baseline on the same validation posts, from the hidden states already cached.

    mentalglm heads train                                        # reads (and caches) every state needed
    python benchmarks/heads_compare.py --old 81c33c0 --old-states runs/mini2/states \
        --new runs/heads/mentalglm-mini/model --new-states runs/heads/mentalglm-mini/states

``--old`` is a heads folder or a git commit whose packaged mentalglm-mini is compared (81c33c0: the heads shipped
before the middle block; a92920d: before issue #21). Both folders are scored on the recipe's validation samples
(``Recipe.validation_examples``, emotion per domain too), each from its own states cache: no model is run except to
read the states a cache lacks (validation posts that build was not scored on; the face-validity check: the emotion
prompt over the high-risk posts of the suicide-risk training split, which no emotion head has seen), with the base
and block the folder's manifest names. The n-gram baseline
(``mentalglm.baselines.ngram``) is trained on the task's train split. Prints the headline metrics with 95%
bootstrap intervals, the paired differences new - old and new - n-gram (1,000 resamples of the posts, seed 13:
an interval above 0 is a demonstrated gain), ECE, and the high-risk flag's recall.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import tempfile
from datetime import date
from pathlib import Path

import numpy as np

from mentalglm.baselines.ngram import NgramBaseline
from mentalglm.data.sources import task_splits
from mentalglm.data.splits import stratified_sample
from mentalglm.evaluate.classification import (bootstrap_intervals, expected_calibration_error,
                                               paired_difference_intervals, score)
from mentalglm.evaluate.report import METRIC_NAMES
from mentalglm.heads import load_heads
from mentalglm.heads.build import STATE_FOLDERS, head_reader, open_reader, reader_settings
from mentalglm.heads.features import StateCache, extract_states, head_text
from mentalglm.heads.fit import label_matrix
from mentalglm.heads.recipe import Recipe
from mentalglm.tasks import get_task

HEADLINE = {"cognitive_distortion": ("micro_f1", "macro_f1"), "suicide_risk": ("high_risk_f1", "accuracy"),
            "suicide_risk_levels": ("accuracy", "within_one"), "emotion": ("macro_f1", "weighted_f1")}
# The aims of issue #21 on validation (percent).
AIMS = {("cognitive_distortion", "micro_f1"): 76, ("cognitive_distortion", "macro_f1"): 40,
        ("suicide_risk", "high_risk_f1"): 84, ("suicide_risk_levels", "accuracy"): 57,
        ("suicide_risk_levels", "within_one"): 80, ("emotion", "macro_f1"): 70}
FACE_POSTS = 150  # high-risk suicide-risk training posts read with the emotion prompt


def heads_at(ref: str, tmp: Path) -> Path:
    """A heads folder: ``ref`` itself, or the packaged mentalglm-mini at git commit ``ref``."""
    if Path(ref).is_dir():
        return Path(ref)
    where = "src/mentalglm/resources/mentalglm-mini"
    names = subprocess.run(["git", "ls-tree", "-r", "--name-only", f"{ref}:{where}"], check=True,
                           capture_output=True, text=True).stdout.split()
    for name in names:  # the explainer's files too (the manifest lists them)
        blob = subprocess.run(["git", "show", f"{ref}:{where}/{name}"], check=True, capture_output=True).stdout
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_bytes(blob)
    return tmp


def predict(head, texts, states):
    probs = np.stack([head.probabilities(t, s) for t, s in zip(texts, states)])
    return probs, [tuple(head.decide(p)) for p in probs], np.array([head.flagged(p) for p in probs])


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def states_of(heads, states: Path, task: str, split: str, examples, threads: int | None) -> list:
    """The states ``task``'s head reads for ``examples``, from the build's cache of the model it reads (the base's
    in ``states``, a classifier's beside it); those it lacks are read with that model, and cached."""
    head = heads.head(task)
    reader, pool = head_reader(head), head.pool
    cache = StateCache(states.parent / STATE_FOLDERS[reader] if reader != "base" else states,
                       reader_settings(heads, reader))
    have = cache.load(task, split, pool)
    if any(e.id not in have for e in examples):
        backend = open_reader(heads, reader, threads)
        extract_states(backend, cache, task, split, examples, pool=pool)
        backend.close()
        have = cache.load(task, split, pool)
    return [have[e.id] for e in examples]


def compare(task, examples, states, old, new, label=None, threads=None) -> tuple[list[str], str]:
    """The table rows of one task (or one domain of it), and a note on calibration and the high-risk flag."""
    spec = get_task(task)
    gold = [e.labels for e in examples]
    texts = [head_text(e.text) for e in examples]
    out, runs = [], {}
    for name, heads in (("old", old), ("new", new)):
        runs[name] = predict(heads.head(task), texts, states_of(heads, states[name], task, "validation", examples,
                                                                threads))
    ngram = NgramBaseline(spec).fit(task_splits(task)["train"]).predict([e.text for e in examples])
    s_old, s_new, s_ngram = (score(spec, gold, runs["old"][1]), score(spec, gold, runs["new"][1]),
                             score(spec, gold, ngram))
    ci = bootstrap_intervals(spec, gold, runs["new"][1])
    d_old = paired_difference_intervals(spec, gold, runs["old"][1], runs["new"][1])
    d_ngram = paired_difference_intervals(spec, gold, ngram, runs["new"][1])
    for key in HEADLINE[task]:
        aim = AIMS.get((task, key))
        out.append(f"| {label or task} ({len(examples)}) | {METRIC_NAMES[key]} | {pct(s_new[key])} "
                   f"[{pct(ci[key][0])}, {pct(ci[key][1])}] | {pct(s_old[key])} | {pct(s_ngram[key])} | "
                   f"{100 * (s_new[key] - s_old[key]):+.1f} [{100 * d_old[key][0]:+.1f}, {100 * d_old[key][1]:+.1f}] | "
                   f"{100 * (s_new[key] - s_ngram[key]):+.1f} [{100 * d_ngram[key][0]:+.1f}, "
                   f"{100 * d_ngram[key][1]:+.1f}] | {aim or '–'} |")
    y = label_matrix(spec, gold)
    note = f"{label or task}: ECE new {pct(expected_calibration_error(runs['new'][0], y, spec.multi_label))}, " \
           f"old {pct(expected_calibration_error(runs['old'][0], y, spec.multi_label))}"
    if spec.high_risk:
        high = np.array([spec.high_risk_in(g) for g in gold])
        for name in ("new", "old"):
            flagged = runs[name][2]
            note += f"; {name} flag recall {pct((high & flagged).sum() / max(1, high.sum()))}% " \
                    f"precision {pct((high & flagged).sum() / max(1, flagged.sum()))}%"
    return out, note


def face_validity(states: dict, old, new, threads: int | None) -> str:
    """How often the emotion heads call a high-risk post 积极 (positive)."""
    train = task_splits("suicide_risk")["train"]
    high = stratified_sample([e for e in train if get_task("suicide_risk").high_risk_in(e.labels)], FACE_POSTS)
    texts = [head_text(e.text) for e in high]
    parts = []
    for name, heads in (("new", new), ("old", old)):
        head = heads.head("emotion")
        _, labels, _ = predict(head, texts, states_of(heads, states[name], "emotion", "face_validity", high, threads))
        counts = {lab: sum(lab in chosen for chosen in labels) for lab in head.labels}
        parts.append(f"{name} 积极 {counts.get('积极', 0)}/{len(high)} ({pct(counts.get('积极', 0) / len(high))}%), "
                     f"悲伤 {counts.get('悲伤', 0)}")
    return "face validity (emotion head on high-risk suicide-risk training posts): " + "; ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", default="81c33c0", help="heads folder or git commit of the packaged heads")
    ap.add_argument("--old-states", type=Path, default=Path("runs/mini2/states"),
                    help="the old heads' states cache (a classifier's: classifier-states beside it)")
    ap.add_argument("--new", default="runs/heads/mentalglm-mini/model", help="heads folder or git commit")
    ap.add_argument("--new-states", type=Path, default=Path("runs/heads/mentalglm-mini/states"),
                    help="the new heads' states cache (a classifier's: classifier-states beside it)")
    ap.add_argument("--tasks", default=",".join(HEADLINE))
    ap.add_argument("--threads", type=int, help="llama.cpp threads for the face-validity states")
    args = ap.parse_args()
    recipe = Recipe()
    with tempfile.TemporaryDirectory() as t_old, tempfile.TemporaryDirectory() as t_new:
        old, new = load_heads(heads_at(args.old, Path(t_old))), load_heads(heads_at(args.new, Path(t_new)))
        states = {"old": args.old_states, "new": args.new_states}
        print(f"{date.today()}, {platform.machine()}, {platform.processor() or ''}; validation samples of the recipe; "
              f"percent; [95% bootstrap interval]; differences paired; new = {args.new}, old = {args.old}\n")
        print("| task (posts) | metric | new | old | n-gram | new - old | new - n-gram | aim |")
        print("|---|---|---|---|---|---|---|---|")
        notes = []
        for task in args.tasks.split(","):
            examples = recipe.validation_examples(task)
            groups = [(task, examples)]
            if len({e.source for e in examples}) > 1:  # emotion: each domain alone too
                groups += [(f"{task} {e_src.split('/')[-1]}", [e for e in examples if e.source == e_src])
                           for e_src in sorted({e.source for e in examples})]
            for label, part in groups:
                rows, note = compare(task, part, states, old, new, label, args.threads)
                print("\n".join(rows))
                notes.append(note)
        if "emotion" in args.tasks:
            notes.append(face_validity(states, old, new, args.threads))
    print()
    for note in notes:
        print(f"- {note}")


if __name__ == "__main__":
    main()
