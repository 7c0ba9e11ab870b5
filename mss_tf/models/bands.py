"""Band layouts of the band-split models: BSRNN's schemes, computed from bandwidth rules in Hz rather
than typed-in bin lists, and the RoFormers' bands (BS-RoFormer's reference layout at any STFT,
Mel-Band RoFormer's overlapping mel bands)."""

from __future__ import annotations

import math
from typing import Sequence, Union

import numpy as np

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


# The reference's band layout for n_fft 2048 (1025 bins, 44.1 kHz): 24 bands of 2 bins, 12 of 4,
# 8 of 12, 8 of 24, 8 of 48, then 128 and 129 (62 bands; bs_roformer.py's DEFAULT_FREQS_PER_BANDS).
DEFAULT_FREQS_PER_BANDS = (2,) * 24 + (4,) * 12 + (12,) * 8 + (24,) * 8 + (48,) * 8 + (128, 129)
DEFAULT_BANDS_STFT = (44100, 2048)  # the STFT those bins are counted at


def bs_roformer_bands(sample_rate: int, n_fft: int) -> list[int]:
    """Bins per band of BS-RoFormer's default layout at an STFT: the reference's 62 bands at
    44.1 kHz / n_fft 2048 (`DEFAULT_FREQS_PER_BANDS`), elsewhere their edges in Hz mapped to this
    STFT's nearest bins and cut at Nyquist (bands left without bins merge with the next). At
    16 kHz / n_fft 1024: 52 bands, the last from 7.75 kHz to Nyquist."""
    n_bins = n_fft // 2 + 1
    reference_rate, reference_fft = DEFAULT_BANDS_STFT
    edges_hz = np.cumsum(DEFAULT_FREQS_PER_BANDS)[:-1] * reference_rate / reference_fft  # upper edges, last excluded
    edges = sorted({int(round(hz * n_fft / sample_rate)) for hz in edges_hz} - {0})
    edges = [e for e in edges if e < n_bins]
    return [int(w) for w in np.diff([0, *edges, n_bins])]


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels) with its defaults (Slaney
    mel scale and area normalisation, 0 Hz to Nyquist, float32), written out in NumPy with the same
    operations, so the model needs no librosa import: (n_mels, n_fft / 2 + 1)."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0

    def hz_to_mel(hz: float) -> float:
        return min_log_mel + np.log(hz / min_log_hz) / logstep if hz >= min_log_hz else hz / f_sp

    def mel_to_hz(mels: np.ndarray) -> np.ndarray:
        hz = f_sp * mels
        log = mels >= min_log_mel
        hz[log] = min_log_hz * np.exp(logstep * (mels[log] - min_log_mel))
        return hz

    fft_freqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate)  # (F,)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(float(sample_rate) / 2), n_mels + 2))  # (n_mels + 2,)
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fft_freqs)  # (n_mels + 2, F)
    weights = np.zeros((n_mels, n_fft // 2 + 1), dtype=np.float32)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, np.newaxis]
    return weights


def mel_band_bins(sample_rate: int, n_fft: int, num_bands: int) -> list[np.ndarray]:
    """The bins of each Mel-Band RoFormer band, as the reference derives them: the mel filter
    bank (`mel_filterbank`) with its first bin in the first band and its last bin in the last band
    (forced, as the reference does), binary (> 0). Bands overlap: a bin belongs to every band
    whose filter is nonzero there."""
    filters = mel_filterbank(sample_rate, n_fft, num_bands)
    filters[0, 0] = 1.0
    filters[-1, -1] = 1.0
    covered = filters > 0  # (bands, F)
    if not covered.any(axis=0).all():
        missing = np.flatnonzero(~covered.any(axis=0))
        raise ConfigError(f"{num_bands} mel bands at {sample_rate} Hz / n_fft {n_fft} leave bins {missing.tolist()[:5]} "
                          "in no band (use fewer bands)")
    if not covered.any(axis=1).all():
        raise ConfigError(f"{num_bands} mel bands at {sample_rate} Hz / n_fft {n_fft}: some bands hold no bin "
                          "(use fewer bands)")
    return [np.flatnonzero(row) for row in covered]
