"""Training: MAPPO/IPPO in plain torch, the runner with checkpoints and resume, and the robust-training hooks."""

from sim2real.train.hooks import TrainingHook
from sim2real.train.mappo import MAPPO
from sim2real.train.runner import LoadedRun, RunError, Trainer, load_learner

__all__ = ["MAPPO", "LoadedRun", "RunError", "Trainer", "TrainingHook", "load_learner"]
