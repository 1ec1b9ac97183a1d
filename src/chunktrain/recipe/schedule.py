"""The learning rate of every optimizer step: a pure function of where training stands in its lineage.

Training stands at position t: the global epochs completed (a fraction within an epoch), or for a text the
global optimizer steps. A step takes training from t0 to t1 (t0 + 1 / steps per epoch, or t0 + 1), and its lr
depends on (t0, t1) and the
settings alone (no scheduler state, no step counter carried between chunks), so chunk boundaries,
resumed snapshots and branches cannot change it:
- the warmup ramps on t1: no step is wasted at lr 0, and the warmup's last step is at the peak;
- the decay follows t0: its first step is at the peak, as torch's schedulers count;
- a cooldown follows t1: its last step is at min_lr.
"""

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    """train.schedule, with the chunk's peak lr and, for a cooldown chunk, where it starts and ends."""

    peak: float  # train.lr, or the chunk's own lr
    warmup: float = 0.0  # linear warmup from 0 to the peak over t in [0, warmup]
    decay: str = "none"  # none | cosine | linear, from the peak at `warmup` to min_lr at `total`
    total: float | None = None
    min_lr: float = 0.0
    cooldown: str | None = None  # linear | cosine: from lr(start) down to min_lr at end
    start: float = 0.0  # the cooldown chunk's first position (its parent's epochs)
    end: float = 0.0  # and its last

    def lr(self, t0: float, t1: float) -> float:
        """The lr of the step that takes training from position t0 to t1."""
        if self.cooldown:
            return self.min_lr + (self.main_line(self.start, self.start) - self.min_lr) * _fall(
                self.cooldown, (t1 - self.start) / (self.end - self.start))
        return self.main_line(t0, t1)

    def main_line(self, t0: float, t1: float) -> float:
        """The warmup, then the stable phase or the decay: what every chunk but a cooldown follows."""
        if t0 < self.warmup:
            return self.peak * min(t1 / self.warmup, 1.0)
        if self.decay == "none":
            return self.peak
        progress = (t0 - self.warmup) / (self.total - self.warmup)
        return self.min_lr + (self.peak - self.min_lr) * _fall(self.decay, progress)


def _fall(shape: str, progress: float) -> float:
    """1 at progress 0 down to 0 at progress 1 (and after), linearly or along half a cosine."""
    progress = min(max(progress, 0.0), 1.0)
    return 1.0 - progress if shape == "linear" else (1.0 + math.cos(math.pi * progress)) / 2.0


def step_span(epoch: int, batch: int, steps_per_epoch: int) -> tuple[float, float]:
    """(t0, t1) of the step that trains batch index `batch` (0-based) of global epoch `epoch` (1-based)."""
    return (epoch - 1) + batch / steps_per_epoch, (epoch - 1) + (batch + 1) / steps_per_epoch
