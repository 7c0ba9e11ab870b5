"""One Dense layer per band, for bands of different widths, computed without a loop over bands.

BSRNN's band split maps each band's 2*C*width values to N features with a Dense layer of its
own, and its mask estimation maps each band's hidden features back to 2 * 2*C*width values:
one side of every Dense has the band's own width. `PerBandDense` stores those weights exactly
(concatenated along the varying side: no padding in the parameter count) and computes them in
a few runs of bands of similar width (`band_runs`; v7: 5 runs for 41 bands): each run's bands
are gathered into a layout zero-padded to its widest band, with a padded kernel gathered the
same way, for one batched matmul per run.

`BandLayout` holds the index maps between the flat band-ordered vector and the padded runs.
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf

from mss_tf.errors import ConfigError


def band_runs(sizes: Sequence[int], ratio: float = 1.5) -> list[tuple[int, int]]:
    """Runs of consecutive bands of similar size, as (first, stop) band indices: a run ends where
    the next band would make its largest size exceed `ratio` x its smallest. Each run is padded
    to its own widest band only (v7: 5 runs, 2100 padded values for 2050, where one layout
    padded to the widest band of all would hold 7872)."""
    groups, first = [], 0
    for k in range(1, len(sizes) + 1):
        if k == len(sizes) or max(sizes[first : k + 1]) > ratio * min(sizes[first : k + 1]):
            groups.append((first, k))
            first = k
    return groups


class BandLayout:
    """Index maps between a flat vector of bands of `sizes` values (in band order) and a layout
    zero-padded per run of similar bands (`band_runs`).

    A band's values can be split into `chunks` equal parts, each padded on its own (the value and
    gate halves of a GLU): a run's padded layout is then (bands, chunks, width) with width the
    run's widest chunk.

    Attributes:
        sizes: values per band.
        total: sum(sizes); the flat position `total` stands for a zero appended at the end.
        runs: per run, (first band, stop band, pad_index) where `pad_index[j, c, d]` (shape
            (bands, chunks, width), the chunk axis dropped when chunks == 1) is the flat position
            of value d of chunk c of band first + j, or `total` past that chunk's size.
        unpad_index: (total,) position of flat value i in the concatenation of the runs'
            flattened padded layouts (its inverse).
    """

    def __init__(self, sizes: Sequence[int], chunks: int = 1) -> None:
        self.sizes = [int(s) for s in sizes]
        self.chunks = int(chunks)
        if any(size % self.chunks for size in self.sizes):
            raise ConfigError(f"band sizes {self.sizes} do not split into {self.chunks} equal chunks")
        starts = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(int)
        self.total = int(sum(self.sizes))
        self.unpad_index = np.zeros(self.total, dtype=np.int32)
        self.runs: list[tuple[int, int, np.ndarray]] = []
        offset = 0
        for first, stop in band_runs(self.sizes):
            width = max(self.sizes[first:stop]) // self.chunks
            pad_index = np.full((stop - first, self.chunks, width), self.total, dtype=np.int32)
            for j, k in enumerate(range(first, stop)):
                chunk = self.sizes[k] // self.chunks
                for c in range(self.chunks):
                    flat = starts[k] + c * chunk + np.arange(chunk)
                    pad_index[j, c, :chunk] = flat
                    self.unpad_index[flat] = offset + (j * self.chunks + c) * width + np.arange(chunk)
            self.runs.append((first, stop, pad_index[:, 0] if self.chunks == 1 else pad_index))
            offset += pad_index.size


def glorot_blocks(shapes: Sequence[tuple[int, int]], axis: int, dtype: Any = None) -> tf.Tensor:
    """Per-band Dense kernels, each Glorot-initialised for its own fan-in/fan-out, joined on `axis`."""
    blocks = [keras.initializers.GlorotUniform()(shape) for shape in shapes]
    return tf.cast(tf.concat(blocks, axis=axis), dtype or "float32")


@keras.saving.register_keras_serializable(package="mss_tf")
class PerBandDense(keras.layers.Layer):
    """A Dense layer per band where one side has the band's own size: band k maps `sizes[k]`
    inputs to `units` outputs (`varying="inputs"`), or `units` inputs to `sizes[k]` outputs
    (`varying="outputs"`). Each band's Dense is Glorot-initialised for its own shape.

    Weights, concatenated along the varying side in band order:
      * inputs vary: kernel (sum(sizes), units), rows of band k at its flat values; bias (bands, units);
      * outputs vary: kernel (units, sum(sizes)), columns of band k at its flat values; bias (sum(sizes),).

    `call` takes a list with one tensor per run of bands of `self.layout` (`BandLayout(sizes,
    chunks)`), the varying side in the run's zero-padded layout:
      * inputs vary: per run (B, T, K_r, D_r) (values past each band's size meet zero rows)
        -> (B, T, bands, units), the runs joined on the band axis;
      * outputs vary: per run (K_r, M, units), band-major -> per run (K_r, M, chunks * D_r),
        each chunk of a band's outputs padded with zeros to D_r (the run's widest chunk).
    """

    def __init__(self, sizes: Sequence[int], units: int, varying: str = "inputs", chunks: int = 1,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if varying not in ("inputs", "outputs"):
            raise ConfigError(f"PerBandDense varying must be 'inputs' or 'outputs', got {varying!r}")
        if varying == "inputs" and chunks != 1:
            raise ConfigError("PerBandDense: chunks apply to varying outputs only")
        self.sizes = [int(s) for s in sizes]
        self.units = int(units)
        self.varying = varying
        self.chunks = int(chunks)
        self.layout = BandLayout(self.sizes, self.chunks)
        self.pad_indices = [tf.constant(index) for _, _, index in self.layout.runs]

    def build(self, input_shape: Any = None) -> None:
        k, total, units = len(self.sizes), self.layout.total, self.units
        if self.varying == "inputs":
            self.kernel = self.add_weight(name="kernel", shape=(total, units), initializer=self._kernel_init)
            self.bias = self.add_weight(name="bias", shape=(k, units), initializer="zeros")
        else:
            self.kernel = self.add_weight(name="kernel", shape=(units, total), initializer=self._kernel_init)
            self.bias = self.add_weight(name="bias", shape=(total,), initializer="zeros")

    def _kernel_init(self, shape: Any, dtype: Any = None) -> tf.Tensor:
        if self.varying == "inputs":
            return glorot_blocks([(size, self.units) for size in self.sizes], axis=0, dtype=dtype)
        return glorot_blocks([(self.units, size) for size in self.sizes], axis=1, dtype=dtype)

    def call(self, x: Any) -> Any:
        dtype = self.compute_dtype
        if self.varying == "inputs":
            kernel = tf.concat([self.kernel, tf.zeros_like(self.kernel[:1])], axis=0)  # (total + 1, units), a zero row last
            bias = tf.cast(self.bias, dtype)
            out = []
            for (first, stop, _), index, run in zip(self.layout.runs, self.pad_indices, x):  # run: (B, T, K_r, D_r)
                z = tf.einsum("btkd,kdn->btkn", tf.cast(run, dtype), tf.cast(tf.gather(kernel, index), dtype))  # (B, T, K_r, units)
                out.append(z + bias[first:stop])
            return tf.concat(out, axis=2) if len(out) > 1 else out[0]  # (B, T, K, units)
        kernel = tf.transpose(tf.concat([self.kernel, tf.zeros_like(self.kernel[:, :1])], axis=1))  # (total + 1, units)
        bias = tf.concat([self.bias, tf.zeros_like(self.bias[:1])], axis=0)  # (total + 1,)
        out = []
        for (first, stop, _), index, run in zip(self.layout.runs, self.pad_indices, x):  # run: (K_r, M, units)
            index = tf.reshape(index, [stop - first, -1])  # (K_r, chunks * D_r)
            y = tf.matmul(run, tf.cast(tf.gather(kernel, index), dtype), transpose_b=True)  # (K_r, M, chunks * D_r)
            out.append(y + tf.cast(tf.gather(bias, index), dtype)[:, tf.newaxis])
        return out

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "sizes": self.sizes, "units": self.units, "varying": self.varying,
                "chunks": self.chunks}
