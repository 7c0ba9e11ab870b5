"""A fast BSSEval v4 (image metrics, time-invariant 512-tap distortion filters).

    from mss_tf.evaluation.bsseval import evaluate
    SDR, ISR, SIR, SAR = evaluate(references, estimates, win=44100, hop=44100)

`evaluate` is a drop-in replacement for ``museval.evaluate(references, estimates, win, hop,
mode="v4")``, i.e. for ``museval.metrics.bss_eval(references, estimates, window=win, hop=hop,
compute_permutation=False, filters_len=512, framewise_filters=False,
bsseval_sources_version=False)``: same inputs (nsrc, nsampl, nchan), same outputs (four
float64 arrays of shape (nsrc, nwin)), same windows (the last partial window is dropped
exactly as museval's ``Framing`` drops it; a window longer than the track gives one window
over the whole track), same NaN windows (a window where any reference or any estimate is
silent, i.e. its channel sum is zero on every sample, is NaN for every source and metric),
same +inf when an error energy is exactly zero, same ValueErrors on bad input. museval
stays the reference; ``tests/test_bsseval.py`` compares the two and
``benchmarks/evaluation.py`` measures both side by side.

What is computed is the same as in museval; only how it is computed changes:

1. **Correlations.** museval takes full-length FFTs (next power of two above the track
   length, complex ``fftpack``) of every reference channel and every estimate channel and
   one full-length inverse FFT per pair of channels (36 for the reference Gram matrix and
   16 per estimate for the right-hand sides of 4 stereo sources: about 130 FFTs of 2^21
   points for a 40 s track), but keeps only the lags -511..511 of each. Here the same
   lagged inner products ``r_pq[k] = sum_n x_p[n + k] y_q[n]`` (|k| < 512, signals zero
   outside the track) are computed blockwise: the sum over n is split into blocks of
   B samples, and each block's contribution is an exact circular correlation of the block
   of y with the matching B + 2*511 samples of x in an FFT of exactly that length (so no
   lag wraps around). Block spectra are accumulated in the frequency domain (one small
   matrix product per frequency for all channel pairs at once) and one inverse FFT per
   pair gives all 1023 lags. In exact arithmetic this is the same linear correlation.
2. **Block-Toeplitz system, solved by block Levinson.** museval builds the dense
   (nsrc*nchan*512)^2 Gram matrix G of the delayed references (entry ((p, a), (q, b)) =
   ``r_pq[b - a]`` for channels p, q and delays a, b) plus ``eps * I`` and solves it from
   scratch with ``numpy.linalg.solve`` (LU, O(n^3): 4096^2 for 4 stereo sources) once per
   estimate, then once more per source for its own diagonal block. Reordered lag-major,
   G is block-Toeplitz with nsrc*nchan square blocks ``R_k[p, q] = r_pq[k]`` (``R_-k = R_k^T``),
   so the block Levinson (Whittle / Wiggins-Robinson) recursion solves it exactly in
   O(512^2 (nsrc*nchan)^3), for the right-hand sides of all estimates at once; the same for
   each source's own block. The matrix is the same (the lags are symmetrised exactly, as
   museval builds one triangle and transposes it, and ``eps * I`` is added as in museval).
   Levinson is less forgiving than LU on nearly singular matrices, so every solution is
   checked against the system itself (block-Toeplitz product by FFT): accepted only if its
   residual is at the level of a backward-stable solver (relative 1e-11) and it is not
   inflated along near-null directions of G (see ``_acceptable``). If the recursion breaks
   down on an exactly singular matrix (e.g. a dual-mono reference, whose delayed channels
   are identical) or fails the check, it is retried once with a ridge of 1e-13 of the
   largest diagonal entry -- accepted on the same check against the system without the
   ridge, so still a solution to rounding level; any solution of such a consistent singular
   system gives the same projections. If that fails too, the dense matrix is built and
   solved as museval solves it (LU with partial pivoting, ``getrf`` + ``getrs``, the two
   halves of numpy's ``gesv``), factorised once for all right-hand sides.
3. **Framewise metrics.** museval convolves every window of every reference channel with
   every filter one ``fftconvolve`` at a time (thousands of small FFTs) and computes the
   four energy ratios window by window from the samples. Here the windows are cut from all
   channels at once and transformed with one batched real FFT per chunk of windows (length
   >= window + 511, so each product below is the full linear convolution of the window
   alone, no history from the previous window, tail included, as in museval); multiplying
   by the filters' spectra and summing over reference channels (one matrix product per
   frequency) gives the spectra of museval's projections p_all (on all references, C) and
   p_own (on the source's own reference, Cj). museval's e_spat = p_own - s_true,
   e_interf = p_all - p_own, e_artif = estimate - p_all, so ISR, SIR and SAR are ratios of
   energies of s_true, p_own, p_all and the estimate and their differences; they are taken
   from the spectra (Parseval: the same sums of squares, without inverse FFTs). SDR is
   taken from the samples, as energy(s_true) / energy(estimate - s_true): the sum of
   museval's three error terms, which involves no filter. All windows and sources are
   summed in one vectorised pass.

Everything above is exact in exact arithmetic. Where the projection problem is well posed,
the results differ from museval by floating-point rounding only (about 1e-12 dB on the test's
generated tracks, 1e-4 dB on procedural demo songs with float32 stems, where museval itself
moves by 1e-3 dB when the references change by one float32 ulp). On nearly degenerate
inputs -- e.g. pure tones with channels proportional up to float32 rounding -- museval's own
ISR/SIR/SAR move by several dB under such an ulp-level change, and this implementation
differs from museval as much as museval differs from itself; SDR, which involves no filter,
still agrees to rounding. Deliberate differences: museval's permutation search
(``compute_permutation``) and v3 mode (``framewise_filters``) are not offered -- ``mode`` must
be "v4"; where museval would fall back to an SVD least-squares solve (numpy raising on an
exactly zero LU pivot, which takes minutes at this size) a ridge is used as described
above; bad input raises ``BssEvalInputError``, a ``ValueError`` (as museval) that is also an
``mss_tf.errors.DataError``, and a mode other than "v4" raises ``ConfigError``.

Pure numpy/scipy; no TensorFlow.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.fft
import scipy.linalg
from numpy.lib.stride_tricks import sliding_window_view

from mss_tf.errors import ConfigError, DataError

__all__ = ["evaluate", "bss_eval_images_v4", "BssEvalInputError", "MAX_SOURCES"]

MAX_SOURCES = 100  # as museval.metrics.MAX_SOURCES

# about how many float64 values one working array may hold (bounds memory for long tracks)
_CHUNK_VALUES = 4_000_000


class BssEvalInputError(DataError, ValueError):
    """References and estimates that BSSEval cannot score (museval raises ValueError for them)."""


def evaluate(references, estimates, win=1 * 44100, hop=1 * 44100, mode="v4", padding=True):
    """BSSEval v4 image metrics, as ``museval.evaluate`` with ``mode="v4"``.

    Parameters
    ----------
    references, estimates : array, shape (nsrc, nsampl, nchan)
        true source images and their estimates (same source order).
    win, hop : int
        window and hop in samples (museval's defaults: 1 s at 44.1 kHz, no overlap).
    mode : str
        only "v4" (time-invariant distortion filters over the whole track).
    padding : bool
        as museval: zero-pad or truncate the estimates to the references' length first.

    Returns
    -------
    SDR, ISR, SIR, SAR : np.ndarray, shape (nsrc, nwin)
    """
    if mode != "v4":
        raise ConfigError(f"mss_tf.evaluation.bsseval computes BSSEval v4 only, not mode={mode!r}")
    estimates = np.array(estimates)
    references = np.array(references)
    if padding:
        references, estimates = _pad_or_truncate(references, estimates)
    return bss_eval_images_v4(references, estimates, window=win, hop=hop)


def bss_eval_images_v4(reference_sources, estimated_sources, window, hop, filters_len=512):
    """``museval.metrics.bss_eval(..., compute_permutation=False, framewise_filters=False,
    bsseval_sources_version=False)``; returns (SDR, ISR, SIR, SAR), each (nsrc, nwin)."""
    estimated_sources = np.atleast_3d(estimated_sources)
    reference_sources = np.atleast_3d(reference_sources)
    ref_sounding, est_sounding = _validate(reference_sources, estimated_sources)
    if reference_sources.size == 0 or estimated_sources.size == 0:
        return np.array([]), np.array([]), np.array([]), np.array([])

    nsrc, nsampl, nchan = estimated_sources.shape
    windows = _frames(window, hop, nsampl)
    nwin = len(windows)
    # museval's silence test, on the inputs' own dtype: a source is silent in a window when
    # its channel sum is exactly zero on every sample of the window
    silent = _silent_windows(ref_sounding, windows) | _silent_windows(est_sounding, windows)

    # time-major (nsampl, nsrc*nchan), columns ordered (source, channel), float64 as in museval
    refs = reference_sources.astype(np.float64).transpose(1, 0, 2).reshape(nsampl, nsrc * nchan)
    ests = estimated_sources.astype(np.float64).transpose(1, 0, 2).reshape(nsampl, nsrc * nchan)
    out = np.full((4, nsrc, nwin), np.nan)
    live = [t for t in range(nwin) if not silent[t]]
    if not live:
        return out[0], out[1], out[2], out[3]
    filters = _distortion_filters(refs, ests, nsrc, nchan, filters_len)

    by_length: dict[int, list[int]] = {}
    for t in live:
        by_length.setdefault(windows[t][1] - windows[t][0], []).append(t)
    for length, ts in by_length.items():
        _window_metrics(refs, ests, filters, nsrc, nchan, [windows[t][0] for t in ts], length, ts, out)
    return out[0], out[1], out[2], out[3]


# ----------------------------------------------------------------------------- input handling

def _pad_or_truncate(references, estimates):
    """museval.pad_or_truncate: estimates cut or zero-padded at the end to the references' length."""
    if estimates.shape[1] != references.shape[1]:
        if estimates.shape[1] >= references.shape[1]:
            estimates = estimates[:, : references.shape[1], :]
        else:
            estimates = np.pad(estimates, [(0, 0), (0, references.shape[1] - estimates.shape[1]), (0, 0)],
                               mode="constant")
    return references, estimates


def _sounding(sources):
    """(nsrc, nsampl) bool: the channel sum is not zero (museval's silence test looks at that sum)."""
    total = sources[:, :, 0].copy()
    for c in range(1, sources.shape[2]):
        total += sources[:, :, c]
    return total != 0


# museval's messages, word for word (with its typos)
_EMPTY_REFERENCE = ("reference_sources is empty, should be of size (nsrc, nsample, nchan). sdr, isr sir, sar, "
                    "and perm will all be empty np.ndarrays")
_SILENT_REFERENCE = ("All the reference sources should be non-silent (not all-zeros), but at least one of the reference "
                     "sources is all 0s, which introduces ambiguity to the evaluation. (Otherwise we can add infinitely "
                     "many all-zero sources.)")
_EMPTY_ESTIMATE = ("estimated_sources is empty, should be of size (nsrc, nsample, nchan).  sdr, isr, sir, sar, "
                   "and perm will all be empty np.ndarrays")
_SILENT_ESTIMATE = ("All the estimated sources should be non-silent (not all-zeros), but at least one of the estimated "
                    "sources is all 0s. Since we require each reference source to be non-silent, having a silent "
                    "estimated source will result in an underdetermined system.")


def _sounding_checked(sources, empty_message, silent_message):
    """_sounding(sources), or None (with museval's warning) when there are none; a source that is
    all zeros is museval's error."""
    if sources.size == 0:
        warnings.warn(empty_message)
        return None
    sounding = _sounding(sources)
    if not np.all(np.any(sounding, axis=1)):
        raise BssEvalInputError(silent_message)
    return sounding


def _validate(reference_sources, estimated_sources):
    """museval.metrics.validate, with the same conditions and messages; returns _sounding() of both."""
    if reference_sources.shape != estimated_sources.shape:
        raise BssEvalInputError(
            "The shape of estimated sources and the true sources should match. "
            f"reference_sources.shape = {reference_sources.shape}, "
            f"estimated_sources.shape = {estimated_sources.shape}")
    if reference_sources.ndim > 3 or estimated_sources.ndim > 3:
        raise BssEvalInputError(
            "The number of dimensions is too high (must be less than 3). "
            f"reference_sources.ndim = {reference_sources.ndim}, estimated_sources.ndim = {estimated_sources.ndim}")
    ref_sounding = _sounding_checked(reference_sources, _EMPTY_REFERENCE, _SILENT_REFERENCE)
    est_sounding = _sounding_checked(estimated_sources, _EMPTY_ESTIMATE, _SILENT_ESTIMATE)
    if estimated_sources.shape[0] > MAX_SOURCES or reference_sources.shape[0] > MAX_SOURCES:
        raise BssEvalInputError(
            f"The supplied matrices should be of shape (nsrc, nsampl, nchan) but reference_sources.shape[0] = "
            f"{reference_sources.shape[0]} and estimated_sources.shape[0] = {estimated_sources.shape[0]} which is "
            f"greater than MAX_SOURCES = {MAX_SOURCES}.")
    return ref_sounding, est_sounding


def _frames(window, hop, length):
    """museval.metrics.Framing as a list of (start, stop): the same arithmetic, so the same
    windows (a trailing partial window is dropped; window >= length gives one whole window)."""
    nwin = int(np.floor((length - window + hop) / hop)) if window < length else 1
    out = []
    for t in range(nwin):
        start = t * hop
        if np.isnan(start) or np.isinf(start):
            start = 0
        stop = min(t * hop + window, length)
        if np.isnan(stop) or np.isinf(stop):
            stop = length
        out.append((int(np.floor(start)), int(np.floor(stop))))
    return out


def _silent_windows(sounding, windows):
    """(nwin,) bool: some source's channel sum is zero on every sample of the window."""
    return np.array([not np.all(np.any(sounding[:, start:stop], axis=1)) for start, stop in windows], dtype=bool)


# ----------------------------------------------------------------------------- distortion filters

def _lagged_correlations(x, y, max_lag):
    """r[p, q, s] = sum_n x[n + s - max_lag, p] * y[n, q] for s = 0 .. 2*max_lag (zero outside).

    x: (n, n_x), y: (n, n_y), time-major. Blockwise: n runs over blocks of B samples; block b
    of y is correlated with the B + 2*max_lag samples of x around it in an FFT of exactly that
    length, so every lag in range is a linear (never wrapped) correlation. Spectra are summed
    over blocks (a matrix product per frequency for all pairs at once), then one inverse FFT."""
    n, n_x = x.shape
    n_y = y.shape[1]
    nfft = 8192
    while nfft < 8 * max_lag:
        nfft *= 2
    block = nfft - 2 * max_lag
    nblocks = -(-n // block)
    xpad = np.zeros((nblocks * block + 2 * max_lag, n_x))
    xpad[max_lag:max_lag + n] = x
    ypad = np.zeros((nblocks * block, n_y))
    ypad[:n] = y
    y_blocks = ypad.reshape(nblocks, block, n_y)

    nfreq = nfft // 2 + 1
    spectrum = np.zeros((nfreq, n_x, n_y), dtype=np.complex128)
    per_chunk = max(1, _CHUNK_VALUES // ((n_x + n_y) * nfft))
    span = np.arange(nfft)
    for b0 in range(0, nblocks, per_chunk):
        b1 = min(nblocks, b0 + per_chunk)
        x_frames = xpad[(np.arange(b0, b1) * block)[:, None] + span]  # (nb, nfft, n_x)
        xf = scipy.fft.rfft(x_frames, axis=1)  # (nb, nfreq, n_x)
        yf = np.conj(scipy.fft.rfft(y_blocks[b0:b1], n=nfft, axis=1))  # (nb, nfreq, n_y)
        spectrum += np.matmul(xf.transpose(1, 2, 0), yf.transpose(1, 0, 2))
    corr = scipy.fft.irfft(spectrum, n=nfft, axis=0)[: 2 * max_lag + 1]  # (2*max_lag+1, n_x, n_y)
    return np.ascontiguousarray(corr.transpose(1, 2, 0))


def _distortion_filters(refs, ests, nsrc, nchan, filters_len):
    """museval's C (all references -> each estimate) and Cj (own reference -> its estimate).

    refs, ests: (nsampl, nsrc*nchan), columns ordered (source, channel). Returns an array
    (2, filters_len, nsrc*nchan, nsrc*nchan): [0] = C indexed (lag, reference source and
    channel, estimate source and channel); [1] = Cj laid out the same way, zero outside each
    source's own diagonal block."""
    nref = nsrc * nchan
    lags = filters_len - 1
    corr = _lagged_correlations(refs, np.concatenate([refs, ests], axis=1), lags)  # (nref, 2 nref, 2 lags + 1)
    rxx, rxy = corr[:, :nref], corr[:, nref:]
    # exact symmetry, as museval's G (it builds one triangle and transposes): r_pq[k] = r_qp[-k]
    rxx = 0.5 * (rxx + rxx.transpose(1, 0, 2)[:, :, ::-1])
    # museval's G as blocks R_k[p, q] = r_pq[k], k = 0 .. lags (R_-k = R_k^T)
    rpos = np.ascontiguousarray(rxx[:, :, lags:].transpose(2, 0, 1))
    # museval's D: rhs[a, p, (jest, c)] = sum_n ref_p[n - a] est_(jest, c)[n] = r^xy[p, (jest, c), -a]
    rhs = np.ascontiguousarray(rxy[:, :, lags::-1].transpose(2, 0, 1))

    filters = np.zeros((2, filters_len, nref, nref))
    filters[0] = _solve_block_toeplitz(rpos, rhs)
    for j in range(nsrc):
        own = slice(j * nchan, (j + 1) * nchan)
        filters[1, :, own, own] = _solve_block_toeplitz(np.ascontiguousarray(rpos[:, own, own]),
                                                        np.ascontiguousarray(rhs[:, own, own]))
    return filters


def _solve_block_toeplitz(rpos, rhs):
    """x with (T + eps I) x = rhs, T[(a, p), (b, q)] = R_(b-a)[p, q] (R_-k = R_k^T): museval's
    dense system, reordered lag-major.

    Fast path: block Levinson (O(L^2 P^3) instead of O(L^3 P^3)), accepted only when its
    residual, computed independently with an FFT block-Toeplitz product, is at the level of a
    backward-stable solver. When the recursion breaks down on an exactly singular channel
    block (e.g. a dual-mono reference: any solution of that consistent system gives the same
    projection) or loses accuracy, it is retried with a ridge far below that residual level
    (accepted on the same test against the system without the ridge). Otherwise the dense
    matrix is built and solved as museval solves it."""
    bare = rpos
    rpos = rpos.copy()
    rpos[0] += np.finfo(float).eps * np.eye(rpos.shape[1])
    largest = np.max(np.abs(np.diagonal(rpos[0])))
    for ridge in (0.0, _RIDGE * largest):
        with np.errstate(all="ignore"):
            try:
                if ridge:
                    ridged = rpos.copy()
                    ridged[0] += ridge * np.eye(rpos.shape[1])
                else:
                    ridged = rpos
                x = _block_levinson(ridged, rhs)
            except np.linalg.LinAlgError:
                continue
            if _acceptable(rpos, rhs, x, largest):
                return x
    n, nref, ncol = rhs.shape
    return _solve_dense(lambda: _dense_gram(bare), rhs.reshape(n * nref, ncol), _RIDGE * largest
                        ).reshape(n, nref, ncol)


def _acceptable(rpos, rhs, x, largest):
    """Whether a Levinson solution is as good as museval's LU one, judged column by column:
    its residual is at the level of a backward-stable solver, and it is not inflated along
    (near-)null directions of T -- filters so large that rounding in the windowed
    projections (about eps * |G| |x|^2 in energy) would no longer be negligible next to the
    projection's energy x . rhs."""
    if not np.all(np.isfinite(x)):
        return False
    scale = np.max(np.abs(x), axis=(0, 1))  # per column; rescaled to keep the norms finite
    if not np.all(scale > 0):
        return False
    xs = x / scale
    residual = rhs / scale - _block_toeplitz_product(rpos, xs)
    norm_x = np.sqrt(np.sum(xs * xs, axis=(0, 1)))
    norm_res = np.sqrt(np.sum(residual * residual, axis=(0, 1)))
    norm_rhs = np.sqrt(np.sum((rhs / scale) ** 2, axis=(0, 1)))
    energy = np.sum(xs * rhs / scale, axis=(0, 1))  # x . rhs = |projection|^2, over scale^2
    ok = np.isfinite(norm_res) & (norm_res <= _TOLERANCE * (largest * norm_x + norm_rhs))
    ok &= largest * norm_x ** 2 <= _INFLATION * np.abs(energy)
    return bool(np.all(ok))


# relative residual |rhs - T x| / (max(diag T) |x| + |rhs|) accepted from block Levinson (a dense
# LU reaches about 1e-15 on these systems)
_TOLERANCE = 1e-11
# largest accepted max(diag T) |x|^2 / (x . rhs): rounding in the projections then stays
# below about sqrt(eps^2 * 1e12 * P * L) ~ 1e-8 of their size (an LU solution on pure tones
# with channels proportional up to float32 rounding, a near-singular case: about 2e4)
_INFLATION = 1e12
# ridge, relative to the largest diagonal entry, for exactly singular systems (its own share of
# the residual is 1e-13, well inside _TOLERANCE)
_RIDGE = 1e-13


def _block_levinson(rpos, rhs):
    """Block Levinson (Whittle / Wiggins-Robinson) recursion for T x = rhs.

    Grows the leading section T_k one lag at a time, keeping forward and backward
    predictors Z, W with T_k Z = [E_f; 0; ...], T_k W = [...; 0; E_b] and the solution of
    T_k x = rhs[:k]. rpos: (n, P, P); rhs: (n, P, m)."""
    n, P, _ = rpos.shape
    m = rhs.shape[2]
    # lhs_f[p, i, q] = R_-(n-i)[p, q] = R_(n-i)[q, p]; lhs_b[p, i, q] = R_(i+1)[p, q]: contiguous
    # slices of these give the block rows that meet the predictors in one matrix product
    lhs_f = np.zeros((P, n, P))
    lhs_f[:, 1:, :] = rpos[:0:-1].transpose(2, 0, 1)
    lhs_b = np.zeros((P, n, P))
    lhs_b[:, : n - 1, :] = rpos[1:].transpose(1, 0, 2)
    forward = np.zeros((n, P, P))
    backward = np.zeros((n + 1, P, P))  # stored one block down: backward[0] is the zero block of [0; W]
    forward[0] = np.eye(P)
    backward[1] = np.eye(P)
    err_f = rpos[0].copy()
    err_b = rpos[0].copy()
    x = np.zeros((n, P, m))
    x[0] = np.linalg.solve(rpos[0], rhs[0])
    for k in range(n - 1):
        row_f = lhs_f[:, n - k - 1:, :].reshape(P, (k + 1) * P)  # block row k+1 against lags 0..k
        delta_f = row_f @ forward[: k + 1].reshape(-1, P)
        delta_x = row_f @ x[: k + 1].reshape(-1, m)
        delta_b = lhs_b[:, : k + 1, :].reshape(P, (k + 1) * P) @ backward[1 : k + 2].reshape(-1, P)
        gain_f = np.linalg.solve(err_b, delta_f)
        gain_b = np.linalg.solve(err_f, delta_b)
        old_forward = forward[: k + 2].reshape(-1, P).copy()
        forward[: k + 2] -= (backward[: k + 2].reshape(-1, P) @ gain_f).reshape(k + 2, P, P)
        backward[1 : k + 3] = (backward[: k + 2].reshape(-1, P) - old_forward @ gain_b).reshape(k + 2, P, P)
        err_f = err_f - delta_b @ gain_f
        err_b = err_b - delta_f @ gain_b
        step = np.linalg.solve(err_b, rhs[k + 1] - delta_x)
        x[: k + 2] += (backward[1 : k + 3].reshape(-1, P) @ step).reshape(k + 2, P, m)
    return x


def _block_toeplitz_product(rpos, x):
    """T x for the block-Toeplitz T of `rpos` (with R_-k = R_k^T), by FFT: (n, P, m) -> (n, P, m)."""
    n, P, _ = rpos.shape
    # kernel[s] = R_(s - (n-1)) for s = 0 .. 2n-2; (T x)[a] = sum_b kernel[b - a + n - 1] x[b]
    kernel = np.concatenate([rpos[:0:-1].transpose(0, 2, 1), rpos])  # (2n-1, P, P)
    nfft = scipy.fft.next_fast_len(3 * n - 2, real=True)
    kf = scipy.fft.rfft(kernel[::-1], n=nfft, axis=0)  # reversed: a convolution
    xf = scipy.fft.rfft(x, n=nfft, axis=0)
    y = scipy.fft.irfft(np.matmul(kf, xf), n=nfft, axis=0)
    return y[n - 1 : 2 * n - 1]


def _dense_gram(rpos):
    """museval's G reordered lag-major: G[(a, p), (b, q)] = R_(b-a)[p, q]."""
    n, P, _ = rpos.shape
    kernel = np.concatenate([rpos[:0:-1].transpose(0, 2, 1), rpos])  # kernel[s] = R_(s - (n-1))
    gram = np.empty((n, P, n, P))
    view = sliding_window_view(kernel, n, axis=0)[::-1]  # [a, p, q, b] = kernel[n-1-a+b] = R_(b-a)
    gram[...] = view.transpose(0, 1, 3, 2)
    return gram.reshape(n * P, n * P)


def _solve_dense(make_gram, rhs, ridge):
    """numpy.linalg.solve(G + eps I, rhs) as museval calls it -- LU with partial pivoting, i.e.
    LAPACK getrf + getrs, which is what gesv does. Where numpy would raise on an exact zero
    pivot, museval falls back to an SVD least-squares solve (minutes at this size); here the
    LU is redone with a small ridge instead: for such a consistent singular system both give
    solutions with the same projection."""
    for extra in (0.0, ridge):
        gram = make_gram()
        gram[np.diag_indices(gram.shape[0])] += np.finfo(float).eps + extra
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
            lu, piv = scipy.linalg.lu_factor(gram, overwrite_a=True, check_finite=False)
        if np.all(np.diagonal(lu) != 0):
            break
    return scipy.linalg.lu_solve((lu, piv), rhs, check_finite=False)


# ----------------------------------------------------------------------------- framewise metrics

def _window_metrics(refs, ests, filters, nsrc, nchan, starts, length, columns, out):
    """Fill out[:, :, columns] for the windows of `length` samples starting at `starts`."""
    filters_len, nref = filters.shape[1], filters.shape[2]
    total = length + filters_len - 1  # museval's window + zero padding: the convolution's tail is kept
    nfft = scipy.fft.next_fast_len(total, real=True)
    # (nfreq, reference channel, estimate channel) for C and for Cj
    filters_all, filters_own = scipy.fft.rfft(filters, n=nfft, axis=1)
    if nsrc == 1:  # C and Cj solve the same system: use one, as museval's identical solves do
        filters_own = filters_all
    # Parseval weights of a real FFT of even length nfft, square-rooted: sum_t x[t]^2 equals
    # sum_f |weight[f] X[f]|^2 for any signal that fits in nfft samples, as these all do
    weight = np.full(nfft // 2 + 1, np.sqrt(2.0 / nfft))
    weight[0] = np.sqrt(1.0 / nfft)
    if nfft % 2 == 0:
        weight[-1] = np.sqrt(1.0 / nfft)
    per_chunk = max(1, _CHUNK_VALUES // (2 * nref * nfft))
    offsets = np.arange(length)[:, None]
    for w0 in range(0, len(starts), per_chunk):
        idx = offsets + np.asarray(starts[w0:w0 + per_chunk])  # (length, nw)
        nw = idx.shape[1]
        ref_w = refs[idx]  # (length, nw, nref)
        est_w = ests[idx]
        ref_f = scipy.fft.rfft(ref_w, n=nfft, axis=0)  # (nfreq, nw, nref)
        ref_f *= weight[:, None, None]
        est_f = scipy.fft.rfft(est_w, n=nfft, axis=0)
        est_f *= weight[:, None, None]
        # every window convolved with every filter, summed over reference channels, in one
        # product per frequency: the spectra of museval's projections (window + 511-sample tail)
        p_all = np.matmul(ref_f, filters_all)  # (nfreq, nw, nref)
        p_own = np.matmul(ref_f, filters_own)

        def energy(sig):  # (nsrc, nw): summed over time or frequency and channels
            if np.iscomplexobj(sig):
                sig = sig.view(np.float64)  # real and imaginary parts side by side
            sig = sig.reshape(sig.shape[0], nw * nsrc, -1)
            return np.einsum("tkc,tkc->k", sig, sig).reshape(nw, nsrc).T

        # museval's decomposition: e_spat = p_own - s_true, e_interf = p_all - p_own,
        # e_artif = estimate - p_all, so s_true + e_spat = p_own, s_true + e_spat + e_interf = p_all
        # and the three errors sum to estimate - s_true. SDR is formed from the samples
        # (it involves no filter: exact even where the filters are ill-determined), the others
        # from the spectra (Parseval: the same energies, without going back to the samples)
        cols = columns[w0:w0 + nw]
        energy_true = energy(ref_w)
        out[0][:, cols] = _safe_db(energy_true, energy(est_w - ref_w))
        out[1][:, cols] = _safe_db(energy_true, energy(p_own - ref_f))
        out[2][:, cols] = _safe_db(energy(p_own), energy(p_all - p_own))
        out[3][:, cols] = _safe_db(energy(p_all), energy(est_f - p_all))


def _safe_db(num, den):
    """museval's _safe_db, elementwise: +inf where the denominator is exactly zero."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den == 0, np.inf, 10 * np.log10(num / den))
