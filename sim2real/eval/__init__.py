"""Evaluation: deterministic rollouts with task metrics (robustness suites and reports build on it)."""

from sim2real.eval.rollout import EvalResult, evaluate

__all__ = ["EvalResult", "evaluate"]
