"""Two-stage LoRA fine-tuning (English IMHI, then Chinese C-IMHI), as MentalGLM was trained.

    from mentalglm.train import load_config, run_training
    run_dir = run_training(load_config("configs/cpu-0.5b.yaml", ["stage2.data.per_task=50"]))

See docs/training.md for the recipes, the run folder and how to use the result.
"""

from .config import ConfigError, TrainConfig, load_config

__all__ = ["ConfigError", "TrainConfig", "load_config", "run_training"]


def run_training(cfg, resume: bool = False, callbacks=()):
    from .stages import run_training as _run  # imports torch/transformers: only when training

    return _run(cfg, resume=resume, callbacks=callbacks)
