"""Early stopping that a noisy validation loss does not fool: a smoothed loss, a minimum improvement, patience.

A validation loss measured once per epoch on a few songs moves up and down by more than a slowly
learning model gains in an epoch, so "no new minimum for `patience` epochs" stops such a model
after a lucky low reading, not because it stopped learning. The rule here:

1. the monitored loss is smoothed by an exponential moving average with Adam's bias correction,
   ``m_t = smoothing * m_{t-1} + (1 - smoothing) * loss_t`` from ``m_0 = 0`` and
   ``smoothed_t = m_t / (1 - smoothing ** t)`` (a weighted mean of the readings so far, the first
   one not weighted more than the others; a non-finite loss leaves it unchanged), which averages
   the epoch-to-epoch noise away (its standard deviation falls by
   ``sqrt((1 - smoothing) / (1 + smoothing))``, 0.33 at 0.8) and follows the trend with a lag of
   about ``smoothing / (1 - smoothing)`` epochs;
2. the first ``ceil(smoothing / (1 - smoothing))`` epochs (that lag: 4 at 0.8) always count as
   progress, so that the smoothed loss averages several readings before its best is held
   against later ones (a lucky first reading would otherwise set a best the trend takes long to beat);
3. an epoch counts as progress only when the smoothed loss falls below its best so far by more
   than ``min_delta`` of that best (a relative threshold: losses of different scales share it),
   so the ever smaller steps of a smoothed plateau do not keep a run alive;
4. the run stops after ``patience`` epochs in a row without progress: the smoothed loss gained
   less than ``min_delta`` over ``patience`` epochs.

The best checkpoint is still the epoch of the lowest raw validation loss (the weights that
scored best), tracked in the same state. The state is a few numbers; the training loop keeps
them in checkpointed variables, so a resumed run continues the same count.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterable

from mss_tf.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class StoppingRule:
    """When a run stops for lack of progress (see the module doc).

    Args:
        patience: epochs in a row without progress that stop the run (>= 1).
        min_delta: relative improvement of the smoothed loss over its best that counts as
            progress, in [0, 1) (0.001: 0.1% of the best).
        smoothing: EMA factor of the smoothed loss, in [0, 1) (0: the raw loss).
    """

    patience: int = 10
    min_delta: float = 0.0
    smoothing: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.patience, bool) or not isinstance(self.patience, int) or self.patience < 1:
            raise ConfigError(f"--patience must be a positive number of epochs, got {self.patience!r}")
        if not 0.0 <= float(self.min_delta) < 1.0:
            raise ConfigError(f"--min-delta is a relative improvement in [0, 1), got {self.min_delta!r}")
        if not 0.0 <= float(self.smoothing) < 1.0:
            raise ConfigError(f"--smoothing is an EMA factor in [0, 1), got {self.smoothing!r}")

    @property
    def warmup(self) -> int:
        """Epochs that always count as progress: the smoothed loss's lag, ceil(s / (1 - s))."""
        return math.ceil(round(self.smoothing / (1.0 - self.smoothing), 9))


@dataclasses.dataclass(frozen=True)
class StoppingState:
    """What the rule remembers between epochs.

    Args:
        best_loss: the lowest raw loss so far (the best checkpoint's).
        smoothed: the bias-corrected EMA of the loss (NaN before the first finite loss).
        weight: the EMA's total weight, ``1 - smoothing ** n`` after n finite losses (its bias correction).
        best_smoothed: the lowest smoothed loss that counted as progress.
        stale_epochs: epochs in a row without progress.
        epochs: epochs folded in so far.
    """

    best_loss: float = math.inf
    smoothed: float = math.nan
    weight: float = 0.0
    best_smoothed: float = math.inf
    stale_epochs: int = 0
    epochs: int = 0


@dataclasses.dataclass(frozen=True)
class Decision:
    """One epoch's outcome: the new state, whether the raw loss is a new best (save the best
    checkpoint), whether the smoothed loss made progress, and whether to stop."""

    state: StoppingState
    best: bool
    progress: bool
    stop: bool


def update(rule: StoppingRule, state: StoppingState, loss: float) -> Decision:
    """Fold one epoch's validation `loss` into `state` under `rule`."""
    finite = math.isfinite(loss)
    best = finite and loss < state.best_loss
    smoothed, weight = state.smoothed, state.weight
    if finite:
        kept = rule.smoothing * weight  # the previous readings' share: 0 at the first one
        weight = kept + (1.0 - rule.smoothing)
        smoothed = ((kept * smoothed if kept else 0.0) + (1.0 - rule.smoothing) * loss) / weight
    threshold = state.best_smoothed - rule.min_delta * abs(state.best_smoothed) if math.isfinite(state.best_smoothed) else math.inf
    warming_up = state.epochs < rule.warmup
    progress = finite and (smoothed < threshold or warming_up)
    new = StoppingState(
        best_loss=loss if best else state.best_loss,
        smoothed=smoothed,
        weight=weight,
        best_smoothed=smoothed if progress else state.best_smoothed,
        stale_epochs=0 if progress else state.stale_epochs + 1,
        epochs=state.epochs + 1,
    )
    return Decision(new, best, progress, new.stale_epochs >= rule.patience)


def stopping_epoch(rule: StoppingRule, losses: Iterable[float]) -> int | None:
    """The epoch (counted from 1) after which `rule` stops a run whose validation losses are
    `losses`, or None if it never does within them."""
    state = StoppingState()
    for epoch, loss in enumerate(losses, start=1):
        decision = update(rule, state, float(loss))
        if decision.stop:
            return epoch
        state = decision.state
    return None
