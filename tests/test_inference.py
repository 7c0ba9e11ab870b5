"""Chunked separation (mss_tf.inference): the one chunk plan and its two overlap-add loops (NumPy
and graph), which samples each model call sees (never zero-padding), that overlap-add leaves no
trace in the output, streaming, and stereo models fed both channels at once."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mss_tf.audio.spectrogram import SpectrogramConfig, stft
from mss_tf.inference import Separator
from mss_tf.models.bsrnn import BSRNN
from mss_tf.models.registry import BSRNN_STFT

STFT = SpectrogramConfig(16000, 1024, 256)
CHUNK, OVERLAP = 16000, 4000  # 1 s chunks, 0.25 s overlap at 16 kHz
STEP = CHUNK - OVERLAP


class Scale(keras.Model):
    """Returns the mixture scaled per target: overlap-add must give the scaled input back."""

    def __init__(self, scales):
        super().__init__()
        self.scales = scales

    def call(self, mixture, training=None):
        return tf.stack([s * mixture for s in self.scales], axis=1)  # (B, S, T, F, 2)


class RecordingScale(Scale):
    """Scale that remembers every input (run eagerly to see values)."""

    def __init__(self, scales):
        super().__init__(scales)
        self.calls = []

    def call(self, mixture, training=None):
        self.calls.append(mixture.numpy())
        return super().call(mixture)


@pytest.fixture
def eager():
    tf.config.run_functions_eagerly(True)
    yield
    tf.config.run_functions_eagerly(False)


def _separator(model):
    """1 s chunks, 0.25 s overlap, one target per scale."""
    targets = [f"t{i}" for i in range(len(model.scales))]
    return Separator(model, STFT, targets, chunk_seconds=CHUNK / 16000, overlap_seconds=OVERLAP / 16000)


def _record_chunks(separator):
    """Wrap the chunk call: every (k, channels, samples) batch of chunks the model is run on."""
    seen, separate_chunks = [], separator._separate_chunks

    def recording(pieces):
        seen.append(pieces.numpy())
        return separate_chunks(pieces)

    separator._separate_chunks = recording
    return seen


@pytest.mark.parametrize("n_samples", [CHUNK + 1, CHUNK + STEP - 1, CHUNK + 2 * STEP, 3 * CHUNK + 777])
def test_no_chunk_holds_padding_when_the_track_is_longer_than_a_chunk(n_samples):
    # sample i of the track is (i + 1) / n: never zero, and each chunk's first value names its start
    ramp = (np.arange(n_samples) + 1) / n_samples
    waves = np.stack([ramp, -ramp]).astype(np.float32)
    separator = _separator(Scale([1.0]))
    seen = _record_chunks(separator)
    separator.separate_model_rate(waves)
    starts = []
    for (piece,) in seen:
        start = int(round(piece[0, 0] * n_samples)) - 1
        assert piece.shape == (2, CHUNK)
        np.testing.assert_array_equal(piece, waves[:, start : start + CHUNK])  # signal only, no zeros
        starts.append(start)
    assert starts[0] == 0 and starts[-1] + CHUNK == n_samples  # the last chunk ends at the track end
    assert all(0 < b - a <= STEP for a, b in zip(starts, starts[1:]))  # each overlap >= OVERLAP


@pytest.mark.parametrize(
    "n_samples",
    [1, 700, CHUNK - 1, CHUNK, CHUNK + 1, CHUNK + STEP - 1, CHUNK + STEP, CHUNK + STEP + 1, CHUNK + 3 * STEP, 50_001],
)
def test_overlap_add_gives_a_pointwise_model_its_straight_output(n_samples):
    waves = np.random.default_rng(n_samples).uniform(-0.5, 0.5, (2, n_samples)).astype(np.float32)
    out = _separator(Scale([1.0, -0.25])).separate_model_rate(waves)
    assert out.shape == (2, 2, n_samples)
    np.testing.assert_allclose(out[0], waves, atol=1e-5)
    np.testing.assert_allclose(out[1], -0.25 * waves, atol=1e-5)


@pytest.mark.parametrize("n_samples", [CHUNK // 3, CHUNK - 1])
def test_a_short_track_is_separated_at_its_own_length(eager, n_samples):
    model = RecordingScale([1.0])
    waves = np.random.default_rng(1).uniform(-0.5, 0.5, (2, n_samples)).astype(np.float32)
    out = _separator(model).separate_model_rate(waves)
    (mixture,) = model.calls
    unpadded = stft(tf.constant(waves), STFT).numpy()  # (C, frames, F)
    assert mixture.shape == (2, STFT.n_frames(n_samples), STFT.n_bins, 2)  # no padded frames
    np.testing.assert_allclose(mixture[..., 0], unpadded.real, atol=1e-4)
    np.testing.assert_allclose(mixture[..., 1], unpadded.imag, atol=1e-4)
    np.testing.assert_allclose(out[0], waves, atol=1e-5)


def test_separate_resamples_and_keeps_stereo_length():
    """separate(): stereo 44.1 kHz in, the model at 16 kHz, stems at 44.1 kHz of the input's shape out."""
    separator = Separator(Scale([1.0]), STFT, ["x"], chunk_seconds=2.0)
    t = np.arange(44100 * 3) / 44100
    audio = np.stack([np.sin(2 * np.pi * 300 * t), 0.5 * np.sin(2 * np.pi * 300 * t)], 1).astype(np.float32)
    out = separator.separate(audio, 44100)["x"]
    assert out.shape == audio.shape
    # band-limited to 8 kHz, a 300 Hz tone survives resampling round trips
    assert np.max(np.abs(out[1000:-1000] - audio[1000:-1000])) < 1e-2


def _tiny_bsrnn_se():
    """N = 8, one module; SE weights x20, so the excitation swings with the squeeze as a trained
    one does (fresh, it stays near sigmoid(0) and what it squeezes barely matters)."""
    keras.utils.set_random_seed(0)
    model = BSRNN(band_scheme="coarse", feature_dim=8, num_modules=1, squeeze_excitation=True, se_reduction=4)
    model(tf.zeros([1, 4, model.n_bins, 2]), training=False)
    for block in model.se_blocks:
        for dense in (block.squeeze_dense, block.excite_dense):
            dense.kernel.assign(20.0 * dense.kernel)
    return model


def _tones(seconds, rate=BSRNN_STFT.sample_rate):
    t = np.arange(int(seconds * rate)) / rate
    noise = 0.02 * np.random.default_rng(3).standard_normal(t.size)
    wave = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 1760 * t) * (t > 0.4) + noise
    return wave.astype(np.float32)[None]  # (1, samples)


def _relative(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def test_bsrnn_se_separates_a_short_track_the_same_whatever_the_chunk_length():
    # 1 s in a 1 s chunk and in a 10 s chunk: the model sees the same frames (no padding), so the
    # SE squeeze and the time BLSTMs see only the track
    model, wave = _tiny_bsrnn_se(), _tones(1.0)
    rate = BSRNN_STFT.sample_rate
    short = Separator(model, BSRNN_STFT, ["vocals"], chunk_seconds=1.0, overlap_seconds=0.25).separate_model_rate(wave)
    long = Separator(model, BSRNN_STFT, ["vocals"], chunk_seconds=10.0).separate_model_rate(wave)
    assert short.shape == long.shape == (1, 1, rate)
    assert _relative(long, short) < 1e-5


def test_bsrnn_se_last_chunk_is_real_signal_not_padding():
    # 1.1 s in 1 s chunks with 0.25 s overlap: the last 0.1 s is separated only by the last chunk,
    # which must be the track's final second (before, it was [0.75 s, 1.75 s): 0.65 s of padding
    # averaged into the SE squeeze); so it equals a straight separation of that final second.
    model, wave = _tiny_bsrnn_se(), _tones(1.1)
    rate = BSRNN_STFT.sample_rate
    chunked = Separator(model, BSRNN_STFT, ["vocals"], chunk_seconds=1.0, overlap_seconds=0.25)
    out = chunked.separate_model_rate(wave)
    last_second = Separator(model, BSRNN_STFT, ["vocals"], chunk_seconds=1.0, overlap_seconds=0.25).separate_model_rate(wave[:, -rate:])
    tail = wave.shape[1] - rate  # samples after the first chunk
    np.testing.assert_allclose(out[..., rate:], last_second[..., -tail:], rtol=0, atol=1e-5 * np.max(np.abs(out)))


class ChunkLoudness(keras.Model):
    """Scales each batch item by its own mean magnitude: the output of a chunk depends on the
    whole chunk, so crossfades and batching of chunks show in the result."""

    scales = [1.0]

    def call(self, mixture, training=None):
        loudness = tf.reduce_mean(tf.abs(mixture), axis=[1, 2, 3], keepdims=True)
        return (mixture * loudness)[:, tf.newaxis]


@pytest.mark.parametrize("per_call", [2, 3, 10])
def test_batching_chunks_does_not_change_the_output(per_call):
    rng = np.random.default_rng(3)
    waves = (rng.uniform(-0.5, 0.5, (2, 5 * CHUNK + 123)) * np.linspace(0.1, 1, 5 * CHUNK + 123)).astype(np.float32)
    one = _separator(ChunkLoudness()).separate_model_rate(waves)
    batched = Separator(ChunkLoudness(), STFT, ["t0"], chunk_seconds=1.0, overlap_seconds=0.25,
                        chunks_per_call=per_call)
    calls = _record_chunks(batched)
    np.testing.assert_allclose(batched.separate_model_rate(waves), one, atol=1e-6)
    n_chunks = len(range(0, waves.shape[1] - CHUNK, STEP)) + 1
    assert [c.shape[:2] for c in calls] == [(min(per_call, n_chunks - i), 2) for i in range(0, n_chunks, per_call)]


def test_crossfades_are_complementary_hann_ramps():
    from mss_tf.inference import ChunkPlan

    plan = ChunkPlan(100, 40)
    window = plan.window(False, False)
    ramp = window[:40]
    np.testing.assert_allclose(ramp + ramp[::-1], 1.0, atol=1e-6)  # fade-out + fade-in sum to one
    np.testing.assert_allclose(ramp, np.sin(np.pi * (np.arange(40) + 0.5) / 80) ** 2, atol=1e-6)  # Hann half
    assert np.all(np.diff(ramp) > 0) and np.all(window[40:60] == 1) and np.allclose(window[60:], ramp[::-1])
    # no fade at the track's two ends
    np.testing.assert_array_equal(plan.window(True, False), np.r_[np.ones(60), ramp[::-1]])
    np.testing.assert_array_equal(plan.window(False, True), np.r_[ramp, np.ones(60)])
    assert window.dtype == np.float32 and ChunkPlan(100, 70).fade == 50  # at most half a chunk


def _written_out_starts(n_samples, chunk, step):
    """The plan's chunk starts as DESIGN states them: every `step` samples, and the last chunk the
    track's final `chunk` samples; one chunk at the track's own length if it is no longer."""
    if n_samples == 0:
        return []
    if n_samples <= chunk:
        return [0]
    return list(range(0, n_samples - chunk, step)) + [n_samples - chunk]


@pytest.mark.parametrize("n_samples", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, CHUNK + STEP - 1, CHUNK + STEP, CHUNK + STEP + 1,
                                       CHUNK + 3 * STEP, 100_003])
def test_chunk_plan_gives_the_same_chunks_in_python_and_in_a_graph(n_samples):
    from mss_tf.inference import ChunkPlan

    plan = ChunkPlan(CHUNK, OVERLAP)
    starts = plan.starts(n_samples)
    assert starts == _written_out_starts(n_samples, CHUNK, STEP)
    assert [plan.is_regular(i, n_samples) for i in range(len(starts))] == [i < len(starts) - 1 for i in range(len(starts))]

    @tf.function
    def in_graph(n):
        n_chunks = plan.n_chunks(n)
        index = tf.range(n_chunks)
        windows = tf.map_fn(lambda i: plan.window(tf.equal(i, 0), tf.equal(i, n_chunks - 1)), index, fn_output_signature=tf.float32)
        return plan.start(index, n), windows

    graph_starts, graph_windows = in_graph(tf.constant(n_samples))
    assert graph_starts.numpy().tolist() == starts
    for i, window in enumerate(graph_windows.numpy()):
        np.testing.assert_array_equal(window, plan.window(i == 0, i == len(starts) - 1))


def _ramped_chunks(pieces):
    """A per-chunk function of elementwise ops only (exactly rounded however TensorFlow compiles
    them): (k, C, n) -> (k, 2, C, n), each sample scaled by its place in its chunk, so overlapping
    chunks estimate the same sample differently and the weights and the order of sums show."""
    n = tf.shape(pieces)[-1]
    ramp = tf.cast(tf.range(n) + 1, tf.float32) / tf.cast(n, tf.float32)  # (n,)
    return tf.stack([pieces * ramp, -0.5 * pieces], axis=1)


@pytest.mark.parametrize("n_samples", [0, 700, CHUNK, CHUNK + 1, CHUNK + 3 * STEP + 77])
def test_the_graph_overlap_add_is_the_numpy_one_to_the_bit(n_samples):
    """`overlap_add_graph` (what an export's whole-track signature runs, here in a graph of any
    input length as in the export) against the in-process `OverlapAdd`, on lengths of one chunk
    and of several: the same plan and the same order of sums, so the same floats."""
    from mss_tf.inference import ChunkPlan, overlap_add, overlap_add_graph

    plan = ChunkPlan(CHUNK, OVERLAP)
    waves = np.random.default_rng(n_samples).uniform(-0.5, 0.5, (2, n_samples)).astype(np.float32)
    graph = tf.function(lambda w: overlap_add_graph(plan, _ramped_chunks, w, 2),
                        input_signature=[tf.TensorSpec([None, None], tf.float32)])(tf.constant(waves)).numpy()
    ours = overlap_add(plan, lambda pieces: _ramped_chunks(tf.constant(pieces)).numpy(), waves, 2)
    assert graph.shape == ours.shape == (2, 2, n_samples)
    np.testing.assert_array_equal(graph, ours)
    if n_samples > CHUNK + STEP:  # the chunks' estimates differ where they overlap: the weights matter
        one_call = _ramped_chunks(tf.constant(waves[np.newaxis])).numpy()[0]
        assert not np.allclose(ours, one_call, atol=1e-3)


def test_a_caller_with_only_a_per_chunk_function_uses_the_plan():
    """What a LiteRT/ONNX chunk graph's caller does: `overlap_add(plan, function, waves, n_targets)`."""
    from mss_tf.inference import ChunkPlan, overlap_add

    plan, calls = ChunkPlan(CHUNK, OVERLAP), []

    def per_chunk(pieces):  # (k, C, samples) -> (k, S=2, C, samples), in NumPy
        calls.append(pieces.shape)
        return np.stack([pieces, -pieces], axis=1)

    waves = np.random.default_rng(0).uniform(-0.5, 0.5, (2, 4 * CHUNK + 5)).astype(np.float32)
    out = overlap_add(plan, per_chunk, waves, n_targets=2, chunks_per_call=2)
    np.testing.assert_allclose(out, np.stack([waves, -waves]), atol=1e-6)
    assert calls == [(2, 2, CHUNK)] * 3  # 6 chunks of exactly `chunk` samples, two per call


def _panned_track(n=3 * 16000, seed=0):
    """Two sources panned hard left and mostly right, and leaky estimates of both."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    a = 0.3 * np.sin(2 * np.pi * 330 * t) * (1 + np.sin(2 * np.pi * 1.5 * t))
    b = 0.1 * rng.standard_normal(n)
    sources = np.stack([np.stack([a, 0 * a]), np.stack([0.2 * b, b])]).astype(np.float32)  # (S, C, n)
    leaky = np.stack([sources[0] + 0.5 * sources[1], sources[1] + 0.5 * sources[0]]).astype(np.float32)
    return sources, leaky


def test_wiener_filter_uses_the_stereo_image_to_clean_leaky_estimates():
    from mss_tf.evaluation.metrics import usdr
    from mss_tf.inference import wiener_filter

    sources, leaky = _panned_track()
    mixture = sources.sum(0)
    filtered = wiener_filter(mixture, leaky, STFT, iterations=2)
    assert filtered.shape == leaky.shape and filtered.dtype == np.float32
    inner = slice(STFT.n_fft, -STFT.n_fft)  # (the iSTFT's first and last frames are not full)
    np.testing.assert_allclose(filtered.sum(0)[:, inner], mixture[:, inner], atol=2e-3)  # posteriors add up to the mix
    for j in range(2):
        before, after = usdr(sources[j], leaky[j]), usdr(sources[j], filtered[j])
        assert after > before + 6, (j, before, after)
    # with a residual source (models that do not separate every stem) the outputs need not sum to the mix
    partial = wiener_filter(mixture, leaky[:1], STFT, iterations=1, residual=True)
    assert partial.shape == (1, 2, mixture.shape[1]) and usdr(sources[0], partial[0]) > usdr(sources[0], leaky[0])


class BandMask(keras.Model):
    """Target a: 70% of the bins around 330 Hz; target b: the rest (both leaky in those bins)."""

    scales = [1.0, 1.0]

    def call(self, mixture, training=None):
        bins = tf.range(tf.shape(mixture)[2])
        mask = 0.7 * tf.cast((bins >= 18) & (bins <= 25), mixture.dtype)[tf.newaxis, tf.newaxis, :, tf.newaxis]
        return tf.stack([mixture * mask, mixture * (1 - mask)], axis=1)


def test_separator_applies_the_wiener_filter_per_chunk_on_stereo_only():
    from mss_tf.evaluation.metrics import usdr

    sources, _ = _panned_track()
    mixture = sources.sum(0)
    plain = Separator(BandMask(), STFT, ["a", "b"], chunk_seconds=1.0, overlap_seconds=0.25)
    wiener = Separator(BandMask(), STFT, ["a", "b"], chunk_seconds=1.0, overlap_seconds=0.25, wiener_iterations=2)
    masked = plain.separate_model_rate(mixture)
    filtered = wiener.separate_model_rate(mixture)
    assert filtered.shape == masked.shape
    inner = slice(STFT.n_fft, -STFT.n_fft)
    np.testing.assert_allclose(filtered.sum(0)[:, inner], mixture[:, inner], atol=2e-3)
    for j in range(2):  # the panning tells the sources apart where the masks could not (about +16 dB)
        assert usdr(sources[j], filtered[j]) > usdr(sources[j], masked[j]) + 8, j
    mono = mixture[:1]
    np.testing.assert_array_equal(wiener.separate_model_rate(mono), plain.separate_model_rate(mono))  # needs stereo
    with pytest.raises(Exception, match="overlap"):
        Separator(Scale([1.0]), STFT, ["a"], chunk_seconds=1.0, overlap_seconds=1.0)


# ------------------------------------------------------------------ streaming (separate.py's path)


def _reference_overlap_add(separator, waves):
    """The whole-track overlap-add written out (one chunk per call, starts and windows from the
    plan): what the streaming `OverlapAdd` must reproduce."""
    n_channels, n_samples = waves.shape
    plan = separator.plan
    if n_samples == 0:
        return np.zeros((len(separator.targets), n_channels, 0), np.float32)
    if n_samples <= separator.chunk:
        return separator.separate_pieces(waves[None])[0]
    out = np.zeros((len(separator.targets), n_channels, n_samples), np.float32)
    norm = np.zeros(n_samples, np.float32)
    starts = plan.starts(n_samples)
    for i, start in enumerate(starts):
        window = plan.window(i == 0, i == len(starts) - 1)
        out[:, :, start : start + separator.chunk] += separator.separate_pieces(waves[None, :, start : start + separator.chunk])[0] * window
        norm[start : start + separator.chunk] += window
    return out / norm


def _push_in_blocks(engine, waves, seed, largest):
    """Push (C, n) waves in random block sizes (some empty, some of one sample)."""
    rng, pieces, at = np.random.default_rng(seed), [], 0
    while at < waves.shape[1]:
        size = int(rng.choice([0, 1, rng.integers(2, largest)]))
        pieces.append(engine.push(waves[:, at : at + size]))
        at += size
    pieces.append(engine.finish())
    assert all(p.shape[:2] == pieces[-1].shape[:2] for p in pieces)
    return np.concatenate(pieces, axis=-1)


@pytest.mark.parametrize("n_samples", [0, 1, 700, CHUNK - 1, CHUNK, CHUNK + 1, CHUNK + STEP, CHUNK + STEP + 1, 5 * CHUNK + 123])
@pytest.mark.parametrize("per_call", [1, 3])
def test_streaming_overlap_add_is_the_whole_track_overlap_add(n_samples, per_call):
    rng = np.random.default_rng(n_samples)
    waves = (rng.uniform(-0.5, 0.5, (2, n_samples)) * np.linspace(0.1, 1, n_samples)).astype(np.float32)
    separator = Separator(ChunkLoudness(), STFT, ["t0"], chunk_seconds=1.0, overlap_seconds=0.25, chunks_per_call=per_call)
    whole = separator.separate_model_rate(waves)
    streamed = _push_in_blocks(separator.overlap_add_engine(2), waves, seed=per_call, largest=9000)
    assert whole.shape == streamed.shape == (1, 2, n_samples)
    np.testing.assert_array_equal(streamed, whole)  # the same chunks, batches and sums: bit for bit
    if per_call == 1:
        np.testing.assert_array_equal(whole, _reference_overlap_add(separator, waves))


def test_streaming_holds_about_one_chunk_whatever_the_length():
    separator = Separator(Scale([1.0]), STFT, ["t0"], chunk_seconds=1.0, overlap_seconds=0.25, chunks_per_call=2)
    engine, block = separator.overlap_add_engine(2), 3000
    waves = np.random.default_rng(0).uniform(-0.5, 0.5, (2, 40 * CHUNK + 321)).astype(np.float32)
    out = [engine.push(waves[:, i : i + block]) for i in range(0, waves.shape[1], block)] + [engine.finish()]
    np.testing.assert_allclose(np.concatenate(out, -1)[0], waves, atol=1e-5)
    assert engine.peak_held <= CHUNK + 2 * STEP + block, engine.peak_held  # not 40 chunks


@pytest.mark.parametrize("rates", [(22050, 16000), (44100, 16000), (16000, 44100), (8000, 16000), (48000, 44100), (16000, 16000)])
def test_stream_resampler_gives_resample_exactly(rates):
    from mss_tf.audio import io as audio_io

    orig, target = rates
    for n_samples in [1, 5, 999, 23456]:
        audio = np.random.default_rng(n_samples).uniform(-0.5, 0.5, (n_samples, 2)).astype(np.float32)
        resampler, rng, at, pieces = audio_io.StreamResampler(orig, target, 2), np.random.default_rng(1), 0, []
        while at < n_samples:
            size = int(rng.integers(0, 5000))
            pieces.append(resampler.process(audio[at : at + size]))
            at += size
        pieces.append(resampler.flush())
        np.testing.assert_array_equal(np.concatenate(pieces), audio_io.resample(audio, orig, target))
    empty = audio_io.StreamResampler(orig, target, 2)
    assert empty.process(np.zeros((0, 2), np.float32)).shape == empty.flush().shape == (0, 2)


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    from tests.test_export import fake_run

    from tests.test_export import STEREO, stereo_run

    root = tmp_path_factory.mktemp("runs")
    return {**{preset: fake_run(root / preset, preset) for preset in ("unet-tiny", "bsrnn-se-tiny")},
            STEREO: stereo_run(root / STEREO)}


def _stereo(n_frames, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(n_frames) / 22050
    wave = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(n_frames)
    return np.stack([wave, 0.6 * wave + 0.05 * rng.standard_normal(n_frames)], axis=1).astype(np.float32)


@pytest.mark.parametrize("preset, rate, n_frames, wiener", [
    pytest.param("unet-tiny", 22050, 15000, 0, id="unet-tiny-22k-below-one-chunk"),  # 1 s chunks at 16 kHz
    pytest.param("unet-tiny", 22050, 22050, 0, id="unet-tiny-22k-one-chunk"),  # exactly one chunk at 16 kHz
    pytest.param("unet-tiny", 22050, 81592, 0, id="unet-tiny-22k-chunks-and-odd-rest"),
    pytest.param("unet-tiny", 22050, 81585, 1, id="unet-tiny-22k-wiener"),  # the per-chunk Wiener post-filter
    pytest.param("bsrnn-se-tiny", 44100, 22050, 0, id="bsrnn-se-tiny-44k-below-one-chunk"),  # the model's own rate
    pytest.param("bsrnn-se-tiny", 44100, 44100, 0, id="bsrnn-se-tiny-44k-one-chunk"),
    pytest.param("bsrnn-se-tiny", 44100, 101433, 0, id="bsrnn-se-tiny-44k-chunks-and-odd-rest"),
    pytest.param("bsrnn-tiny-stereo", 48000, 101433, 1, id="stereo-bsrnn-tiny-48k-chunks-wiener"),  # channels=2
])
def test_streaming_separation_equals_in_memory_separate(tiny_runs, preset, rate, n_frames, wiener):
    """separate.py's streaming path against `Separator.separate` on the whole track in memory;
    soxr's streaming resampler gives one-shot resampling's samples exactly, so they agree to the
    last bit (0.0 measured); 1e-5 is the bound promised."""
    from mss_tf.inference import StreamingSeparation

    separator = Separator.from_run(tiny_runs[preset], chunk_seconds=1.0, overlap_seconds=0.25, wiener_iterations=wiener)
    audio = _stereo(n_frames, seed=n_frames)
    expected = separator.separate(audio, rate)
    targets = separator.targets[::-1]  # any order, any subset
    stream = StreamingSeparation(separator, rate, 2, targets)
    pieces, rng, at = [], np.random.default_rng(0), 0
    while at < audio.shape[0]:
        size = int(rng.integers(1, 20000))
        pieces.append(stream.push(audio[at : at + size]))
        at += size
    pieces.append(stream.finish())
    got = np.concatenate(pieces, axis=1)  # (targets, frames, channels)
    assert got.shape == (len(targets), audio.shape[0], 2)
    error = max(float(np.max(np.abs(got[i] - expected[t]))) for i, t in enumerate(targets))
    print(f"{preset} {rate} Hz {audio.shape[0]} frames wiener={wiener}: max abs difference {error:.1e}")
    assert error <= 1e-5, error
    assert max(float(np.max(np.abs(expected[t]))) for t in targets) > 1e-3  # not a silent model


def test_separate_file_writes_what_separate_returns_and_cleans_up_on_errors(tiny_runs, tmp_path, monkeypatch):
    import soundfile

    from mss_tf.errors import AudioError
    from mss_tf.inference import separate_file

    separator = Separator.from_run(tiny_runs["unet-tiny"], chunk_seconds=1.0, overlap_seconds=0.25)
    audio = _stereo(3 * 22050 + 11, seed=5)
    song = tmp_path / "song.wav"
    soundfile.write(song, audio, 22050, subtype="FLOAT")
    out = tmp_path / "out" / "song"
    calls = []
    info = separate_file(separator, song, {"vocals": out / "vocals.wav", "bass": out / "bass.flac"}, block_seconds=0.3,
                         progress=lambda done, total, rate: calls.append((done, total, rate)))
    assert info == {"frames": audio.shape[0], "sample_rate": 22050, "channels": 2, "seconds": audio.shape[0] / 22050,
                    "streamed": True}
    expected = separator.separate(audio, 22050)
    vocals, rate = soundfile.read(out / "vocals.wav", dtype="float32")
    assert rate == 22050 and vocals.shape == audio.shape
    np.testing.assert_allclose(vocals, expected["vocals"], atol=1e-6)
    assert soundfile.info(str(out / "bass.flac")).frames == audio.shape[0]
    assert calls[0] == (0, audio.shape[0], 22050) and calls[-1][0] == audio.shape[0] and len(calls) > 5
    assert sorted(p.name for p in out.iterdir()) == ["bass.flac", "vocals.wav"]  # no temporary files

    # a format libsndfile cannot open is decoded whole by load_audio, then streamed the same way
    real_open = soundfile.SoundFile
    monkeypatch.setattr(soundfile, "SoundFile", lambda path, *a, **k: real_open(path, *a, **k) if a or k else
                        (_ for _ in ()).throw(RuntimeError("unsupported")))
    fallback = separate_file(separator, song, {"vocals": tmp_path / "fallback" / "vocals.wav"})
    monkeypatch.undo()
    assert not fallback["streamed"]
    np.testing.assert_allclose(soundfile.read(tmp_path / "fallback" / "vocals.wav", dtype="float32")[0], vocals, atol=1e-6)

    # an error half-way (NaN at 2 s; an interrupt) leaves no stem, no temporary file, no new folder,
    # and an existing stem untouched
    bad = audio.copy()
    bad[2 * 22050] = np.nan
    soundfile.write(tmp_path / "bad.wav", bad, 22050, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        separate_file(separator, tmp_path / "bad.wav", {"vocals": tmp_path / "new" / "deep" / "vocals.wav"}, block_seconds=0.5)
    assert not (tmp_path / "new").exists()
    before = (out / "vocals.wav").read_bytes()

    def interrupt(done, total, rate):
        if done > rate:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        separate_file(separator, song, {"vocals": out / "vocals.wav", "drums": out / "drums.wav"}, block_seconds=0.5,
                      progress=interrupt)
    assert (out / "vocals.wav").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["bass.flac", "vocals.wav"]


# ------------------------------------------------------------------ stereo models (channels=2)


def _stereo_bsrnn():
    keras.utils.set_random_seed(1)
    model = BSRNN(band_scheme="coarse", feature_dim=8, num_modules=1, channels=2)
    model(tf.zeros([1, 2, 4, model.n_bins, 2]), training=False)
    return model


def test_a_stereo_model_separates_both_channels_at_once():
    """The left estimate of a stereo model depends on the right input (it sees both channels); a
    mono model's does not (each channel alone): the test tells them apart."""
    left, right = _tones(1.3)[0], _tones(1.3)[0][::-1].copy()
    changed = 0.5 * right + 0.1
    for model, joint in [(_stereo_bsrnn(), True), (_tiny_bsrnn_se(), False)]:
        separator = Separator(model, BSRNN_STFT, ["vocals"], chunk_seconds=0.5, overlap_seconds=0.1)
        assert separator.model_channels == (2 if joint else 1)
        a = separator.separate_model_rate(np.stack([left, right]))
        b = separator.separate_model_rate(np.stack([left, changed]))
        assert a.shape == b.shape == (1, 2, left.size)
        difference = float(np.max(np.abs(a[0, 0] - b[0, 0])))
        assert (difference > 1e-4) if joint else (difference == 0.0), (joint, difference)
        assert float(np.max(np.abs(a[0, 1] - b[0, 1]))) > 1e-4  # the right estimate follows its own input


def test_a_mono_track_given_to_a_stereo_model_is_duplicated_and_its_estimates_averaged(tmp_path):
    from mss_tf.errors import AudioError
    from mss_tf.inference import StreamingSeparation, separate_file

    separator = Separator(_stereo_bsrnn(), BSRNN_STFT, ["vocals"], chunk_seconds=0.5, overlap_seconds=0.1, name="duet")
    mono = _tones(1.3)  # (1, samples): three chunks
    out = separator.separate_model_rate(mono)
    assert out.shape == (1, 1, mono.shape[1])
    twice = separator.separate_model_rate(np.concatenate([mono, mono]))  # (1, 2, samples)
    np.testing.assert_allclose(out[:, 0], twice.mean(axis=1), rtol=0, atol=1e-6 * np.max(np.abs(twice)))
    assert not np.allclose(twice[:, 0], twice[:, 1], atol=1e-4)  # the two channel estimates differ: a mean, not a pick
    # more than two channels: one line naming the input and the count, before any work
    with pytest.raises(AudioError, match="audio: 3 channels; duet is a stereo model"):
        separator.separate(np.zeros((1000, 3), np.float32), 44100)
    with pytest.raises(AudioError, match="song.wav: 6 channels"):
        StreamingSeparation(separator, 44100, 6, source="song.wav")
    import soundfile

    soundfile.write(tmp_path / "surround.wav", np.zeros((4410, 6), np.float32), 44100)
    with pytest.raises(AudioError, match=f"^{tmp_path / 'surround.wav'}: 6 channels"):
        separate_file(separator, tmp_path / "surround.wav", {"vocals": tmp_path / "out" / "vocals.wav"})
    assert not (tmp_path / "out").exists()
    # a mono model takes any number of channels, each on its own
    mono_model = Separator(_tiny_bsrnn_se(), BSRNN_STFT, ["vocals"], chunk_seconds=0.5, overlap_seconds=0.1)
    assert mono_model.separate(np.zeros((1000, 3), np.float32), 44100)["vocals"].shape == (1000, 3)


def test_from_run_builds_the_runs_channels_and_its_familys_chunk(tiny_runs):
    """config.model_kwargs' channels reach the model; the default chunk is the family's (README:
    BSRNNs 5 s, the U-Net 10 s), 1 s of overlap."""
    stereo = Separator.from_run(tiny_runs["bsrnn-tiny-stereo"])
    assert stereo.model.channels == stereo.model_channels == 2
    assert (stereo.chunk, stereo.overlap) == (5 * 44100, 44100)
    unet = Separator.from_run(tiny_runs["unet-tiny"])
    assert unet.model_channels == 1 and (unet.chunk, unet.overlap) == (10 * 16000, 16000)
