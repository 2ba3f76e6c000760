"""Running mean and variance: the observation normaliser (exported with the actor) and the value normaliser."""

from __future__ import annotations

import torch
from torch import nn


class RunningMeanStd(nn.Module):
    """Running mean and variance over a stream of batches (parallel-variance update, Chan et al.).

    The statistics are buffers, so they are in the module's ``state_dict`` and travel with checkpoints and
    exports.

    Args:
        shape: shape of one sample (``(D,)`` for observations, ``()`` for values).
        clip: :meth:`normalize` clips to ``[-clip, clip]``; None = no clipping.
        eps: added to the variance before the square root.
    """

    def __init__(self, shape: tuple[int, ...] = (), clip: float | None = 10.0, eps: float = 1e-8) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))
        self.clip = clip
        self.eps = eps

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Fold the samples ``x [B, *shape]`` into the statistics."""
        x = x.reshape(-1, *self.mean.shape).to(torch.float64)
        if x.shape[0] == 0:
            return
        b_mean, b_var, b_count = x.mean(0), x.var(0, unbiased=False), x.shape[0]
        delta = b_mean - self.mean
        total = self.count + b_count
        self.mean += delta * b_count / total
        m2 = self.var * self.count + b_var * b_count + delta**2 * self.count * b_count / total
        self.var.copy_(m2 / total)
        self.count.copy_(total)

    @property
    def std(self) -> torch.Tensor:
        """Standard deviation, float32."""
        return torch.sqrt(self.var + self.eps).float()

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std``, clipped to ``[-clip, clip]``; float32."""
        y = (x - self.mean.float()) / self.std
        return y if self.clip is None else torch.clamp(y, -self.clip, self.clip)

    def denormalize(self, y: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize` (without the clipping); float32."""
        return y * self.std + self.mean.float()
