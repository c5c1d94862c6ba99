"""Each task's unsure threshold, chosen on a heads run's validation predictions (never on test posts), for a run
made before ``mentalglm heads train`` chose them itself (it calls the same ``heads.unsure.fit_thresholds``).

Reads ``<run>/validation/<task>.jsonl`` (written by ``mentalglm heads train``: rows with ``labels`` and ``scores``)
and the gold labels of ``mentalglm.data.sources.task_splits(task)["validation"]`` (joined by id), and computes
each row's confidence as the product does (``mentalglm.heads.unsure.confidence``: the chosen label's probability;
multi-label, the distance of the closest per-label decision to its threshold). A row is right when its labels
are the gold labels (the exact set; the 0-10 scale: the exact level).

The rule: fit the accuracy as a non-decreasing function of the confidence (isotonic regression over the
validation rows); the threshold is the lowest confidence at which the fitted accuracy reaches ``--target``
(default 0.60). Rows under it are in the range where labels are right less than 60% of the time; they carry the
runner-up, and their explanation weighs the two labels. If the fitted accuracy never reaches the target, every
row is unsure (the threshold is above the highest confidence); if it always does, none is.

    python benchmarks/unsure_threshold.py runs/mini2                 # print the thresholds
    python benchmarks/unsure_threshold.py runs/mini2 --write         # and store them in runs/mini2/model
    python benchmarks/unsure_threshold.py runs/mini2 --write --heads src/mentalglm/resources/mentalglm-mini

``--write`` puts ``unsure.json`` into the heads folder and lists it (sha256) in its manifest, where
``mentalglm.heads.load_heads`` reads it; a heads folder without it uses the defaults of ``heads.unsure``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mentalglm.data.sources import task_splits
from mentalglm.heads import load_heads
from mentalglm.heads.unsure import fit_thresholds, write_thresholds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="a heads run folder (mentalglm heads train --out): validation/<task>.jsonl")
    ap.add_argument("--heads", help="the heads folder (default: <run>/model)")
    ap.add_argument("--target", type=float, default=0.6, help="accuracy under which a row is unsure (default 0.6)")
    ap.add_argument("--data-root", help="corpora folder (default: ../shared/data or $MENTALGLM_DATA)")
    ap.add_argument("--write", action="store_true", help="store unsure.json in the heads folder")
    args = ap.parse_args()
    run = Path(args.run)
    heads_folder = Path(args.heads) if args.heads else run / "model"
    heads = load_heads(heads_folder)
    predictions, gold = {}, {}
    for path in sorted((run / "validation").glob("*.jsonl")):
        if path.stem in heads.heads:
            predictions[path.stem] = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
                                      if line.strip()]
            gold[path.stem] = {e.id: e.labels for e in task_splits(path.stem, args.data_root)["validation"]}
    if not predictions:
        raise SystemExit(f"no validation predictions of {heads.name}'s tasks in {run / 'validation'}")
    table = fit_thresholds(heads.heads, predictions, gold, args.target, str(run / "validation"),
                           f"python benchmarks/unsure_threshold.py {args.run}" + (" --write" if args.write else ""))
    print(json.dumps(table, ensure_ascii=False, indent=1))
    if args.write:
        print(f"wrote {write_thresholds(heads_folder, table)} (listed in {heads_folder / 'manifest.json'})")


if __name__ == "__main__":
    main()
