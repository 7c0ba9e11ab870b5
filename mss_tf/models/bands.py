"""Band-split schemes of BSRNN, computed from bandwidth rules in Hz rather than typed-in bin lists."""

from __future__ import annotations

import math
from typing import Sequence, Union

from mss_tf.errors import ConfigError

# A scheme is a list of (upper edge in Hz, bandwidth in Hz) rules applied from 0 Hz upwards:
# bands of `bandwidth` up to `upper edge`, then the next rule; whatever lies above the last
# upper edge (up to Nyquist) is one final band. At a sample rate whose Nyquist frequency lies
# inside the rules, the scheme is cut there (the band holding Nyquist ends at it), so the
# paper's schemes apply at 16 kHz too (v7: 30 bands).
BandRules = Sequence[Sequence[float]]

BAND_SCHEMES: dict[str, list[tuple[float, float]]] = {
    # Luo & Yu (TASLP 2023), "V7", used for vocals and other: 10 + 12 + 8 + 8 + 2 + 1 = 41 bands.
    "v7": [(1000, 100), (4000, 250), (8000, 500), (16000, 1000), (20000, 2000)],
    # The paper's bass scheme: 50 Hz bands below 500 Hz, 100 Hz to 1 kHz, 500 Hz to 4 kHz, 1 kHz to
    # 8 kHz, 2 kHz to 16 kHz, the rest as one band: 10 + 5 + 6 + 4 + 4 + 1 = 30 bands.
    "bass": [(500, 50), (1000, 100), (4000, 500), (8000, 1000), (16000, 2000)],
    # The paper's drums scheme: 50 Hz bands below 1 kHz, 100 Hz to 2 kHz, 250 Hz to 4 kHz, 500 Hz
    # to 8 kHz, 1 kHz to 16 kHz, the rest as one band: 20 + 10 + 8 + 8 + 8 + 1 = 55 bands.
    # (Both rule sets agree with the bass/drums band specifications of the public Bandit code of
    # Watcharasupat et al., which generalises BSRNN, and give the paper's band counts.)
    "drums": [(1000, 50), (2000, 100), (4000, 250), (8000, 500), (16000, 1000)],
    # not from the paper: a coarse 12-band scheme for the tiny (test / CPU demo) presets.
    "coarse": [(1000, 250), (4000, 1000), (8000, 2000), (16000, 4000)],
}

# The scheme the paper uses for each target when `band_scheme="auto"`.
TARGET_SCHEMES = {"vocals": "v7", "other": "v7", "bass": "bass", "drums": "drums"}


def resolve_scheme(scheme: Union[str, BandRules], targets: Sequence[str]) -> Union[str, BandRules]:
    """`"auto"` -> the paper's scheme for a single target (v7 for several targets); else unchanged."""
    if scheme != "auto":
        return scheme
    if len(targets) == 1:
        return TARGET_SCHEMES.get(targets[0], "v7")
    return "v7"


def band_edges_hz(rules: BandRules, sample_rate: int) -> list[float]:
    """Band edges in Hz (first 0, last Nyquist) that the rules describe, cut at Nyquist."""
    nyquist = sample_rate / 2
    edges = [0.0]
    for upper, width in rules:
        upper, width = float(upper), float(width)
        if width <= 0 or upper <= edges[-1]:
            raise ConfigError(f"band rules must have positive widths and rising edges, got {list(rules)}")
        count = round((upper - edges[-1]) / width)
        if not math.isclose(edges[-1] + count * width, upper):
            raise ConfigError(f"band rule ({upper}, {width}) does not tile from {edges[-1]} Hz")
        edges += [edges[-1] + (i + 1) * width for i in range(count)]
    return [edge for edge in edges if edge < nyquist] + [nyquist]


def band_widths(scheme: Union[str, BandRules], sample_rate: int, n_fft: int) -> list[int]:
    """Number of STFT bins in each band of `scheme` (a name in BAND_SCHEMES or a list of rules).

    Bin k (centre frequency k * sample_rate / n_fft) belongs to the band [lo, hi) holding its
    centre frequency; the Nyquist bin joins the last band. The widths tile all n_fft/2 + 1 bins.
    """
    if isinstance(scheme, str):
        if scheme not in BAND_SCHEMES:
            raise ConfigError(f"unknown band scheme {scheme!r} (choose from {', '.join(sorted(BAND_SCHEMES))})")
        rules: BandRules = BAND_SCHEMES[scheme]
    else:
        rules = scheme
    n_bins = n_fft // 2 + 1
    bin_hz = sample_rate / n_fft
    edges = band_edges_hz(rules, sample_rate)
    starts = [math.ceil(edge / bin_hz - 1e-9) for edge in edges[:-1]] + [n_bins]
    widths = [end - start for start, end in zip(starts[:-1], starts[1:])]
    if min(widths) < 1:
        raise ConfigError(
            f"band scheme {scheme!r} has a band without bins at {sample_rate} Hz / n_fft {n_fft} "
            f"(bins are {bin_hz:.1f} Hz apart)"
        )
    return widths
