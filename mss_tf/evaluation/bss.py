"""BSSEval v4 per track, as museval scores a MUSDB track (SiSEC 2018 conventions).

`score_track` reproduces `museval.eval_mus_track` without a musdb `Track` object: the targets
are scored together (BSSEval v4 images, time-invariant 512-tap filters, 1 s windows and hops);
when vocals are among the targets, the vocals are scored in the vocals/accompaniment scenario
(vocals against the sum of the other stems) and the accompaniment is reported too, exactly as
museval does when it is given both. A single non-vocal target is scored against the rest of the
mixture (museval would score nothing). The result is museval's `TrackStore` (its JSON is
museval's per-track format; `EvalStore` aggregates it: median over frames, then over tracks).

`metrics_fn` is `museval.evaluate` (the reference) or `mss_tf.evaluation.bsseval.evaluate`
(`evaluate.py --fast`), both `(references, estimates, win, hop) -> (SDR, ISR, SIR, SAR)`.
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

METRICS = ("SDR", "SIR", "ISR", "SAR")
ACCOMPANIMENT = "accompaniment"
MetricsFn = Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]


def metrics_function(fast: bool) -> MetricsFn:
    """museval's BSSEval v4 (default, the reference) or the fast implementation."""
    if fast:
        from mss_tf.evaluation.bsseval import evaluate

        return evaluate
    import museval

    return lambda references, estimates, win, hop: museval.evaluate(references, estimates, win=win, hop=hop, mode="v4")


def scenarios(targets: list[str]) -> list[tuple[list[str], list[str]]]:
    """(sources scored together, sources whose scores are kept) for the targets of a model."""
    if not targets:
        return []
    plan = []
    rest = [t for t in targets if t != "vocals"]
    if "vocals" in targets:
        plan.append((["vocals", ACCOMPANIMENT], ["vocals", ACCOMPANIMENT]))
    if len(rest) >= 2 or (len(rest) == 1 and "vocals" in targets):
        together = targets if len(targets) >= 2 else rest
        plan.append((together, rest))
    elif len(rest) == 1:  # one non-vocal target: against the rest of the mixture
        plan.append((rest + ["rest"], rest))
    return plan


def score_track(
    name: str,
    references: Mapping[str, np.ndarray],
    estimates: Mapping[str, np.ndarray],
    mixture: np.ndarray,
    rate: int,
    metrics_fn: MetricsFn,
    win_seconds: float = 1.0,
    hop_seconds: float = 1.0,
):
    """BSSEval v4 of one track: `references`/`estimates` map target -> (samples, channels).

    Returns a museval `TrackStore` with one entry per target (and "accompaniment" when vocals
    are separated); frames are `win_seconds` long every `hop_seconds`.
    """
    import museval

    targets = [t for t in estimates if t in references]
    refs, ests = dict(references), dict(estimates)
    if "vocals" in targets:
        others = [t for t in references if t not in ("vocals", "mixture")]
        refs[ACCOMPANIMENT] = sum(references[t] for t in others) if others else mixture - references["vocals"]
        non_vocal = [t for t in estimates if t != "vocals"]
        # the accompaniment estimate: the other stems when the model separates all of them
        ests[ACCOMPANIMENT] = (sum(estimates[t] for t in non_vocal) if set(non_vocal) >= set(others) and non_vocal
                               else mixture - estimates["vocals"])
    if len(targets) == 1 and targets != ["vocals"]:
        refs["rest"] = mixture - references[targets[0]]
        ests["rest"] = mixture - estimates[targets[0]]
    store = museval.TrackStore(track_name=name, win=win_seconds, hop=hop_seconds)
    win, hop = int(win_seconds * rate), int(hop_seconds * rate)
    for together, kept in scenarios(targets):
        sdr, isr, sir, sar = metrics_fn(
            np.stack([np.asarray(refs[t], np.float64) for t in together]),
            np.stack([np.asarray(ests[t], np.float64) for t in together]),
            win=win, hop=hop,
        )
        for i, target in enumerate(together):
            if target in kept:
                store.add_target(target_name=target, values={
                    "SDR": sdr[i].tolist(), "SIR": sir[i].tolist(), "ISR": isr[i].tolist(), "SAR": sar[i].tolist()})
    return store


def track_medians(scores) -> dict[str, dict[str, float]]:
    """{target: {metric: median over frames (NaN frames ignored)}} of a TrackStore or of its
    JSON (museval's per-track format): what the per-track box plots show."""
    scores = getattr(scores, "scores", scores)
    out = {}
    for target in scores["targets"]:
        values = {m: [np.nan if f["metrics"][m] is None else float(f["metrics"][m]) for f in target["frames"]]
                  for m in METRICS}
        out[target["name"]] = {m: _nanmedian(v) for m, v in values.items()}
    return out


def _nanmedian(values: list[float]) -> float:
    array = np.asarray(values, np.float64)
    return float(np.nanmedian(array)) if np.isfinite(array).any() else float("nan")
