"""Public PyTorch RoFormer checkpoints -> mss-tf run directories (torch only as an optional extra).

    python -m mss_tf.convert CHECKPOINT --config CONFIG.yaml --out RUN_DIR [--model-type TYPE]
        [--torch-python PYTHON]        (also the console script `mss-convert`)

The checkpoints are those of ZFTurbo/Music-Source-Separation-Training, whose
`models/bs_roformer/` holds the BS-RoFormer (`BSRoformer`) and Mel-Band RoFormer
(`MelBandRoformer`) the public checkpoints were trained with; its YAML configs describe them.
The steps, each its own function (one module per step):

1. `reference`: `read_config`: the YAML as published (safe loading plus the `!!python/tuple` tag) ->
   `parse_config`: a `ReferenceConfig` (model type, the model's arguments with the reference's
   defaults, targets, STFT). An option the Keras models do not implement is a one-line
   ConfigError naming it, never a silently different model.
2. `state_dict`: `read_checkpoint`, the state dict as numpy arrays (`.ckpt/.pth/.pt` through
   torch, imported there only, or run in another Python that has it: `torch_python`; `.npz`
   without it), and `check_state_dict` against `expected_shapes(config)`: every key, every shape.
3. `mapping`: `keras_model_kwargs`, the Keras preset and constructor arguments of the same
   architecture, and `keras_weights`, every Keras variable from the reference's tensors by the
   `Rule`s of `KERAS_MAPPINGS` (each variable assigned once, each tensor used).
4. `run`: `convert` builds the Keras model and `write_run` writes config.json and the `best/`
   checkpoint atomically, so evaluate.py, separate.py and `python -m mss_tf.export` take it.

The reference's conventions, every one checked by tests/test_convert.py against the fixtures the
real PyTorch code wrote (through tests/roformer_numpy.py, a numpy forward pass, and through the
Keras models with converted weights) (tests/data/roformer/, benchmarks/roformer_reference.py):
- STFT: torch.stft(center=True, reflect padding, periodic Hann window of n_fft, not normalized):
  `SpectrogramConfig(padding="reflect")`.
- Band input: per band, its bins' values in the order [bin][channel][real, imag] (BS: bins
  [start, start + width); Mel: the bins where librosa's mel filter of the band is > 0, with the
  first bin forced into the first band and the last into the last).
- RMSNorm: x / max(||x||, 1e-12) * sqrt(dim) * gamma.
- Attention (per head h of `heads`, dim_head d): to_qkv's output rows are [q | k | v], each
  head-major (h, d); rotary embedding on q and k over the sequence axis (positions 0..n-1,
  frequencies 10000^(-2i/d), pairs of adjacent features (2i, 2i+1) rotated); softmax(q k^T / sqrt(d)) v;
  the output of head h times sigmoid(to_gates(x_normed))[h]; to_out (no bias) over (h, d).
- Feed-forward: RMSNorm, Linear(dim, 4 dim), exact (erf) GELU, Linear(4 dim, dim).
- Transformer: x = attn(x) + x; x = ff(x) + x per layer; Mel ends each transformer with an
  RMSNorm, BS has none but one `final_norm` after the last block.
- Block i: a time transformer over frames (per band), then a frequency transformer over bands
  (per frame).
- Mask estimator, per target and band: Linear, Tanh, ..., Linear (BS: `mask_estimator_depth`
  Linear layers, Mel: one more; hidden width dim * mlp_expansion_factor) then GLU (first half *
  sigmoid(second half)), giving the band's [bin][channel][real, imag] complex mask.
- Mel: each bin's mask is the average of the masks of the bands holding it.
- The DC bin of every estimate is zeroed (zero_dc); the inverse STFT is torch.istft, cut to the
  input's length (BS; Mel with match_input_audio_length) or hop * (frames - 1) samples (Mel).
"""


from mss_tf.convert.mapping import KERAS_MAPPINGS, Rule, check_bands, keras_model_kwargs, keras_weights
from mss_tf.convert.reference import (DEFAULT_FREQS_PER_BANDS, INFERENCE_NEUTRAL, MODEL_TYPES, PRESETS,
                                      REFERENCE_ARGUMENTS, REQUIRED_VALUES, ReferenceConfig, detect_model_type,
                                      load_yaml, mel_band_bins, parse_config, read_config)
from mss_tf.convert.run import CONVERTED_FROM, build_parser, convert, main, write_run
from mss_tf.convert.state_dict import (TORCH_HINT, TORCH_READER, check_state_dict, expected_shapes, mask_mlp_dims,
                                       read_checkpoint, rotary_frequencies, unwrap_state_dict)

__all__ = [
    "CONVERTED_FROM", "DEFAULT_FREQS_PER_BANDS", "INFERENCE_NEUTRAL", "KERAS_MAPPINGS", "MODEL_TYPES", "PRESETS",
    "REFERENCE_ARGUMENTS", "REQUIRED_VALUES", "ReferenceConfig", "Rule", "TORCH_HINT", "TORCH_READER", "build_parser",
    "check_bands", "check_state_dict", "convert", "detect_model_type", "expected_shapes", "keras_model_kwargs",
    "keras_weights", "load_yaml", "main", "mask_mlp_dims", "mel_band_bins", "parse_config", "read_checkpoint",
    "read_config", "rotary_frequencies", "unwrap_state_dict", "write_run",
]
