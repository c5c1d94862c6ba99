"""`mentalglm heads`: train label heads over a frozen GGUF (how mentalglm-mini is made), and show a heads folder."""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

EXAMPLES = """examples:
  mentalglm heads train                                   # reproduce mentalglm-mini in runs/heads/mentalglm-mini
  mentalglm heads train --out runs/heads/mine --threads 2  # interrupted? run the same command again: it resumes
  mentalglm heads train --ship                            # ... and replace the packaged heads (source checkout)
  mentalglm heads train --out runs/heads/frozen --classifier none   # every head on the frozen 1.5B
  mentalglm heads train --out runs/heads/block16 --classifier none --layers 16   # ... on a middle block
  mentalglm heads train --out runs/heads/tuned --classifier-tasks all   # every head on the LoRA classifier
  mentalglm heads train --out runs/heads/big --classifier runs/cls-1.5b --classifier-recipe 1.5b --classifier-tasks all
                                    # ... a classifier on the 1.5B (its attention), one read of a post for every task
  mentalglm heads train --keep cognitive_distortion=src/mentalglm/resources/mentalglm-mini
                                    # take that task's head as it is from an earlier build (only re-scored)
  mentalglm heads show                                    # the packaged heads: base model, validation scores
  mentalglm heads show runs/heads/mine/model
  mentalglm heads explainer --run runs/train/explainer-0.5b-imhi   # the run's adapter becomes the packaged explainer
  mentalglm heads screen                                  # refit the packaged heads' screen (analyze --screen)
  mentalglm analyze --heads runs/heads/mine/model "最近总觉得自己什么都做不好"

train reads the research corpora (../shared/data, MENTALGLM_DATA or --data-root; docs/data.md says where to get
them) and the packaged Qwen2.5-Coder GGUFs. On 2 CPU cores: training the classifier (runs/classifier, once) about
1 h 30 min, reading hidden states about 1 h 30 min (cached as they are made), fitting minutes. Every step resumes.
"""


# What mentalglm-mini is built with (docs/model-card.md): suicide risk and the 0-10 scale gained on the classifier,
# emotion and the rarer distortions lost on it.
CLASSIFIER_RUN = "runs/classifier"
CLASSIFIER_TASKS = ("suicide_risk", "suicide_risk_levels")
CLASSIFIER_RECIPES = ("0.5b", "1.5b")  # heads.classifier.RECIPES, named here without importing it (a quick --help)


def register(sub, fmt):
    p = sub.add_parser("heads", help="label heads: train (reproduces mentalglm-mini), show",
                       description="Label heads decide each task's label over its closed label set, with calibrated "
                                   "probabilities, from a frozen GGUF model's hidden state and the post's characters.",
                       epilog=EXAMPLES, formatter_class=fmt)
    p.add_argument("action", choices=["train", "show", "explainer", "screen"])
    p.add_argument("folder", nargs="?", help="show, explainer, screen: a heads folder (default: the packaged "
                                             "mentalglm-mini)")
    p.add_argument("--run", help="explainer: a finished `mentalglm train` run whose GGUF adapter becomes the folder's "
                                 "explainer")
    p.add_argument("--scores", help="explainer: a JSON file of the explainer's validation scores for its manifest")
    p.add_argument("--tasks", help="explainer: the tasks it writes by default, comma-separated (where it was measured "
                                   "to beat the heads' own model; default: every task it learned)")
    p.add_argument("--out", default="runs/heads/mentalglm-mini", help="train: run folder (states cache, model, report)")
    p.add_argument("--threads", type=int, help="train: CPU threads for llama.cpp (default: all cores)")
    p.add_argument("--data-root", help="train: folder holding the corpora (default: ../shared/data or $MENTALGLM_DATA)")
    p.add_argument("--layers", type=int, metavar="K",
                   help="train: read the base's state after its block K (a copy of the GGUF cut there, made once in "
                        "the cache; K/28 of the prompt pass; default: every block)")
    p.add_argument("--classifier", metavar="RUN", default=CLASSIFIER_RUN,
                   help="train: the LoRA classifier that --classifier-tasks read (trained into RUN first with "
                        "--classifier-recipe, resumable; on the 0.5B two passes of about 45 minutes on 2 cores); "
                        "'none': every task reads the frozen base")
    p.add_argument("--classifier-recipe", choices=CLASSIFIER_RECIPES, default="0.5b",
                   help="train: the recipe a new --classifier run starts with: the packaged 0.5B with LoRA on every "
                        "linear layer, or the 1.5B with LoRA on its attention (one pass, 90-120 minutes here); a "
                        "started run keeps its own")
    p.add_argument("--classifier-tasks", metavar="TASKS", default=",".join(CLASSIFIER_TASKS),
                   help="train: the tasks whose heads read the classifier, comma-separated, or 'all'; the others "
                        "read the frozen base (one read of a post serves every task on the classifier)")
    p.add_argument("--ship", action="store_true", help="train: copy the result into the package as mentalglm-mini")
    p.add_argument("--keep", action="append", default=[], metavar="TASK=FOLDER",
                   help="train: take TASK's head from an earlier heads folder instead of refitting it (when its "
                        "recipe and data have not changed); only its validation states are read, to score it again")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..heads import HeadsError, load_heads, packaged_dir

    if args.action == "show":
        try:
            show(load_heads(args.folder))
        except HeadsError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    if args.action == "explainer":
        return add_explainer(args)
    if args.action == "screen":
        from ..heads.screen import fit_screens, write_screen

        folder = Path(args.folder) if args.folder else packaged_dir()
        print(f"wrote {write_screen(folder, fit_screens(load_heads(folder).heads, args.data_root))}")
        return 0
    from ..heads.build import train_heads
    from ..heads.recipe import Recipe

    classifier = None if args.classifier.lower() == "none" else args.classifier
    if classifier and args.layers:
        print("error: --layers reads the base cut after a block; add --classifier none (a classifier reads its own "
              "model's last block)", file=sys.stderr)
        return 2
    on_classifier = None if args.classifier_tasks == "all" else \
        tuple(t.strip() for t in args.classifier_tasks.split(",") if t.strip())
    recipe = Recipe(layers=args.layers, classifier=classifier, classifier_tasks=on_classifier if classifier else None)
    kept = dict(k.split("=", 1) for k in args.keep if "=" in k)
    unknown = [k for k in args.keep if "=" not in k] + [t for t in [*kept, *(recipe.classifier_tasks or ())]
                                                        if t not in recipe.tasks]
    if unknown:
        print(f"error: --keep takes TASK=FOLDER and --classifier-tasks TASKS, with TASK one of "
              f"{', '.join(recipe.tasks)}; got {unknown}", file=sys.stderr)
        return 2
    command = "mentalglm heads train" + (f" --out {args.out}" if args.out != "runs/heads/mentalglm-mini" else "") \
        + (f" --layers {args.layers}" if args.layers else "") \
        + (f" --classifier {args.classifier}" if args.classifier != CLASSIFIER_RUN else "") \
        + (f" --classifier-recipe {args.classifier_recipe}" if classifier and args.classifier_recipe != "0.5b"
           else "") \
        + (f" --classifier-tasks {args.classifier_tasks}" if classifier and recipe.classifier_tasks != CLASSIFIER_TASKS
           else "") \
        + "".join(f" --keep {t}={f}" for t, f in kept.items())
    if classifier:  # train it first (or continue its training), and export its adapter for llama.cpp
        from ..heads.classifier import RECIPES
        from ..train.classifier import ensure_trained, export_classifier

        ensure_trained(Path(classifier), args.data_root, args.threads, RECIPES[args.classifier_recipe])
        export_classifier(Path(classifier))
    folder = train_heads(recipe, Path(args.out), args.threads, args.data_root, command, kept)
    show(load_heads(folder))
    if args.ship:
        from ..heads.explainer import carry_explainer

        target = packaged_dir()
        if target.exists():
            if carry_explainer(target, folder):
                print(f"kept the explainer of {target}")
            shutil.rmtree(target)
        shutil.copytree(folder, target)
        print(f"shipped: {target}")
    return 0


def add_explainer(args) -> int:
    import json

    from ..heads import HeadsError, packaged_dir
    from ..heads.explainer import install_explainer

    if not args.run:
        print("error: heads explainer needs --run RUN (a `mentalglm train` run folder)", file=sys.stderr)
        return 2
    folder = Path(args.folder) if args.folder else packaged_dir()
    scores = json.loads(Path(args.scores).read_text(encoding="utf-8")) if args.scores else None
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    command = shlex.join(["mentalglm", "heads", "explainer", *([args.folder] if args.folder else []), "--run", args.run,
                          *(["--tasks", args.tasks] if args.tasks else [])])
    try:
        spec = install_explainer(Path(args.run), folder, command, scores, tasks)
    except HeadsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{folder}: explainer {spec.adapter} on {spec.base}")
    return 0


def show(headset) -> None:
    from rich.console import Console
    from rich.table import Table

    from ..evaluate.report import METRIC_NAMES
    from ..tasks import get_task

    m = headset.manifest
    console = Console()
    block = f", block {headset.layers}" if headset.layers else ""
    c = headset.classifier
    on_c = [t for t in headset.heads if headset.head(t).pool == "post"]
    rest = [t for t in headset.heads if t not in on_c]
    reads = (f"heads of {', '.join(on_c)} over a LoRA classifier on {c.base} ({c.adapter.stat().st_size / 1e6:.1f} MB; "
             f"one read a post)" + (f", of {', '.join(rest)} over {m['base']['name']}{block}" if rest else "")
             + f"; explanations by {m['base']['name']}" if c else f"heads over {m['base']['name']}{block}")
    console.print(f"[bold]{m['name']}[/bold] ({headset.folder}): {reads} "
                  f"(sha256 {m['base']['sha256'][:12]}…), built {m.get('built', '?')} by `{m.get('command', '?')}`")
    table = Table(title="validation sample (never used for a choice), percent")
    for col in ("task", "posts", "metric", "heads", "n-gram part", "state part", "ECE", "risk threshold: recall / precision"):
        table.add_column(col)
    for task, v in m["validation"].items():
        spec = get_task(task)
        risk = v.get("risk_operating_point")
        for i, key in enumerate(spec.metrics):
            table.add_row(task if i == 0 else "", str(v["validation_posts"]) if i == 0 else "", METRIC_NAMES.get(key, key),
                          *(f"{100 * v['scores'][part][key]:.1f}" for part in ("stack", "ngram", "state")),
                          f"{100 * v['ece_validation']:.1f}" if i == 0 else "",
                          (f"P≥{risk['threshold']:.3f}: {100 * risk['recall']:.0f} / {100 * risk['precision']:.0f}"
                           if risk and i == 0 else ""))
    console.print(table)
    if headset.screens:
        console.print("screen (analyze --screen): " + ", ".join(
            f"{t} decides {100 * (s.info or {}).get('decided_share_out_of_fold', 0):.0f}% at {s.threshold:.2f}"
            for t, s in headset.screens.items()) + " (training posts, out of fold)")
    if headset.explainer:
        e = headset.explainer
        console.print(f"explainer: LoRA adapter on {e.base} ({e.adapter.stat().st_size / 1e6:.1f} MB), writes "
                      f"{', '.join(e.tasks) or 'no task'} by default (--explainer trained: every task); made by "
                      f"`{e.info.get('command', '?')}`")
