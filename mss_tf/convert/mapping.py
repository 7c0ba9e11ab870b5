"""The reference's weights onto the Keras RoFormers (mss_tf/models/roformer.py): the constructor
arguments that build the same architecture (`keras_model_kwargs`) and, per Keras variable, the
reference tensors it is made of (`Rule`s, `KERAS_MAPPINGS`), checked by `keras_weights`: every
Keras variable assigned exactly once, every tensor of the state dict used, every shape right.

The Keras variables are named by their attribute paths (`mss_tf.checkpoints.model_variables`);
the layouts they hold are those of `mss_tf.models.per_band` and `mss_tf.models.roformer`:
  * a Dense kernel is (in, out), the transpose of torch's Linear weight (out, in);
  * to_qkv's output columns are [q | k | v], each (head, feature), as torch's rows: the same
    reshape on both sides, so the kernel is the plain transpose;
  * the band split's per-band norm gains and Dense rows are concatenated in band order, its
    biases stacked (`BandSplit`); each band's values are [bin][channel][real, imag] on both sides;
  * the mask heads' hidden layers are stacked per band (K, in, out); the last Linear of each band
    (output [value | gate], the GLU's halves) is concatenated along the outputs (`PerBandDense`
    with varying outputs);
  * one rotary embedding per axis (time, bands) where the reference keeps a copy of the same
    frequencies in every attention layer: all copies must be equal.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from mss_tf.convert.reference import PRESETS, ReferenceConfig
from mss_tf.errors import ConfigError


def keras_model_kwargs(config: ReferenceConfig) -> tuple[str, dict[str, Any]]:
    """The Keras preset and its model arguments that build the reference's architecture (the STFT
    goes with the run config, `config.stft`).

    Every argument that decides the architecture is given, so the converted run does not depend
    on the preset's defaults: the sizes, the bands (BS: `freqs_per_bands`; Mel: `num_bands`), the
    reference's dropout rates (inactive in inference; kept for fine-tuning) and the switches that
    name where the reference code differs from the papers. `mask_estimator_depth` is the
    config's own, read as its model class reads it (`mask_estimator_depth_counts`: BS counts
    Linear layers, Mel hidden layers).
    """
    a = config.arguments
    bs = config.model_type == "bs_roformer"
    kwargs: dict[str, Any] = {
        "targets": list(config.targets), "channels": config.channels, "dim": a["dim"], "depth": a["depth"],
        "time_transformer_depth": a["time_transformer_depth"], "freq_transformer_depth": a["freq_transformer_depth"],
        "heads": a["heads"], "dim_head": a["dim_head"], "attn_dropout": float(a["attn_dropout"]),
        "ff_dropout": float(a["ff_dropout"]), "mask_estimator_depth": a["mask_estimator_depth"],
        "mlp_expansion_factor": a["mlp_expansion_factor"], "zero_dc": True, "gated_attention": True,
        "final_norm": bs, "transformer_norm_output": not bs,
        "mask_estimator_depth_counts": "linear_layers" if bs else "hidden_layers",
    }
    if bs:
        kwargs["freqs_per_bands"] = list(a["freqs_per_bands"])
    else:
        kwargs["num_bands"] = a["num_bands"]
    return PRESETS[config.model_type], kwargs


def check_bands(config: ReferenceConfig) -> None:
    """ConfigError unless the Keras model's bands hold the reference's bins: the Mel-Band RoFormer
    computes its mel bands itself (`roformer.mel_band_bins`, librosa's filter bank in numpy), the
    reference with librosa (`ReferenceConfig.band_bins`); BS bands are passed as they are."""
    if config.model_type != "mel_band_roformer":
        return
    from mss_tf.models.roformer import mel_band_bins

    ours = mel_band_bins(config.stft.sample_rate, config.stft.n_fft, int(config.arguments["num_bands"]))
    for k, (mine, theirs) in enumerate(zip(ours, config.band_bins())):
        if not np.array_equal(mine, theirs):
            raise ConfigError(f"mel band {k} holds bins {mine[0]}..{mine[-1]} in the Keras model and "
                              f"{theirs[0]}..{theirs[-1]} in the reference (librosa): the models would differ")


# ------------------------------------------------------------------------------------------- rules


@dataclasses.dataclass(frozen=True)
class Rule:
    """One Keras variable (`path`) made of reference tensors (`keys`, in order) by `combine`."""

    path: str
    keys: tuple[str, ...]
    combine: Callable[[list[np.ndarray]], np.ndarray]


def same(arrays: list[np.ndarray]) -> np.ndarray:
    """A gain or bias: the tensor as it is."""
    return arrays[0]


def kernel(arrays: list[np.ndarray]) -> np.ndarray:
    """A Dense kernel (in, out) from a Linear weight (out, in)."""
    return arrays[0].T


def band_gains(arrays: list[np.ndarray]) -> np.ndarray:
    """Per-band vectors concatenated in band order: (sum of sizes,)."""
    return np.concatenate(arrays)


def band_rows(arrays: list[np.ndarray]) -> np.ndarray:
    """Per-band Linear weights (out, size_k) as one kernel, bands' rows in order: (sum of sizes, out)."""
    return np.concatenate([w.T for w in arrays], axis=0)


def band_columns(arrays: list[np.ndarray]) -> np.ndarray:
    """Per-band Linear weights (size_k, in) as one kernel, bands' columns in order: (in, sum of sizes)."""
    return np.concatenate([w.T for w in arrays], axis=1)


def band_stack(arrays: list[np.ndarray]) -> np.ndarray:
    """Per-band biases of one size: (bands, size)."""
    return np.stack(arrays)


def band_kernels(arrays: list[np.ndarray]) -> np.ndarray:
    """Per-band Linear weights of one shape (out, in) as stacked kernels: (bands, in, out)."""
    return np.stack([w.T for w in arrays])


def shared(arrays: list[np.ndarray]) -> np.ndarray:
    """Copies of one tensor (the rotary frequencies of every attention layer of an axis)."""
    for array in arrays[1:]:
        if not np.array_equal(array, arrays[0]):
            raise ValueError("the copies differ; the Keras model has one per axis")
    return arrays[0]


def _transformer_rules(keras: str, torch: str, depth: int, norm: bool) -> list[Rule]:
    """A transformer's layers: Keras `{keras}/attention/j`, `feed_forward/j` from torch
    `{torch}.layers.j.0` (attention), `.1` (feed-forward: net.0 RMSNorm, net.1 and net.4 Linear)."""
    rules = []
    for j in range(depth):
        attn, ff, t_attn, t_ff = f"{keras}/attention/{j}", f"{keras}/feed_forward/{j}", f"{torch}.layers.{j}.0", \
            f"{torch}.layers.{j}.1"
        rules += [
            Rule(f"{attn}/norm/gamma", (f"{t_attn}.norm.gamma",), same),
            Rule(f"{attn}/to_qkv/kernel", (f"{t_attn}.to_qkv.weight",), kernel),
            Rule(f"{attn}/to_gates/kernel", (f"{t_attn}.to_gates.weight",), kernel),
            Rule(f"{attn}/to_gates/bias", (f"{t_attn}.to_gates.bias",), same),
            Rule(f"{attn}/to_out/kernel", (f"{t_attn}.to_out.0.weight",), kernel),
            Rule(f"{ff}/norm/gamma", (f"{t_ff}.net.0.gamma",), same),
            Rule(f"{ff}/proj_in/kernel", (f"{t_ff}.net.1.weight",), kernel),
            Rule(f"{ff}/proj_in/bias", (f"{t_ff}.net.1.bias",), same),
            Rule(f"{ff}/proj_out/kernel", (f"{t_ff}.net.4.weight",), kernel),
            Rule(f"{ff}/proj_out/bias", (f"{t_ff}.net.4.bias",), same),
        ]
    if norm:
        rules.append(Rule(f"{keras}/norm/gamma", (f"{torch}.norm.gamma",), same))
    return rules


def roformer_rules(config: ReferenceConfig) -> list[Rule]:
    """Every variable of the Keras BSRoformer / MelBandRoformer built by `keras_model_kwargs`."""
    a = config.arguments
    bands = range(len(config.band_bins()))
    mel = config.model_type == "mel_band_roformer"
    features = [f"band_split.to_features.{k}" for k in bands]
    rules = [
        Rule("band_split/norm_gamma", tuple(f"{f}.0.gamma" for f in features), band_gains),
        Rule("band_split/dense/kernel", tuple(f"{f}.1.weight" for f in features), band_rows),
        Rule("band_split/dense/bias", tuple(f"{f}.1.bias" for f in features), band_stack),
    ]
    for axis, index, depth in (("time", 0, a["time_transformer_depth"]), ("freq", 1, a["freq_transformer_depth"])):
        copies = tuple(f"layers.{i}.{index}.layers.{j}.0.rotary_embed.freqs" for i in range(a["depth"])
                       for j in range(depth))
        rules.append(Rule(f"{axis}_rotary_embed/freqs", copies, shared))
    for i in range(a["depth"]):
        rules += _transformer_rules(f"time_transformers/{i}", f"layers.{i}.0", a["time_transformer_depth"], mel)
        rules += _transformer_rules(f"freq_transformers/{i}", f"layers.{i}.1", a["freq_transformer_depth"], mel)
    if not mel:
        rules.append(Rule("final_norm/gamma", ("final_norm.gamma",), same))
    last = config.mask_linear_layers - 1  # Linear layers: `last` hidden (Linear + Tanh), then the GLU's
    for n in range(len(config.targets)):
        linear = [[f"mask_estimators.{n}.to_freqs.{k}.0.{2 * layer}" for k in bands] for layer in range(last + 1)]
        for layer in range(last):
            suffix = "" if layer == 0 else f"_{layer}"
            rules += [
                Rule(f"mask_estimators/{n}/hidden_kernel{suffix}", tuple(f"{p}.weight" for p in linear[layer]),
                     band_kernels),
                Rule(f"mask_estimators/{n}/hidden_bias{suffix}", tuple(f"{p}.bias" for p in linear[layer]), band_stack),
            ]
        rules += [
            Rule(f"mask_estimators/{n}/glu/kernel", tuple(f"{p}.weight" for p in linear[last]), band_columns),
            Rule(f"mask_estimators/{n}/glu/bias", tuple(f"{p}.bias" for p in linear[last]), band_gains),
        ]
    return rules


# Per model type: the rules for a configuration.
KERAS_MAPPINGS: dict[str, Callable[[ReferenceConfig], list[Rule]]] = {
    "bs_roformer": roformer_rules,
    "mel_band_roformer": roformer_rules,
}


def _names(items: Sequence[str], limit: int = 3) -> str:
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")


def keras_weights(config: ReferenceConfig, state: Mapping[str, np.ndarray], variables: Mapping[str, Any],
                  release: bool = False) -> dict[str, np.ndarray]:
    """The Keras model's variables' values (`{path: float32 array}`) from the reference's state
    dict, by the rules of `KERAS_MAPPINGS`. A ConfigError naming them if any variable is assigned
    twice or not at all, a rule names a variable the model lacks or a key the state dict lacks, a
    tensor of the state dict is used by no rule, or a result has another shape than its variable.

    `release`: remove each tensor from `state` (a dict) once its rule has run, so that a paper-size
    checkpoint is not held twice (the 4-stem Mel-Band RoFormer's is 3.3 GB)."""
    model_type = config.model_type
    if model_type not in KERAS_MAPPINGS:
        raise ConfigError(f"no mapping of {model_type} weights onto the Keras {PRESETS[model_type]}")
    rules = KERAS_MAPPINGS[model_type](config)
    where = f"the {model_type} mapping onto the Keras {PRESETS[model_type]}"
    counts = collections.Counter(rule.path for rule in rules)
    twice = [path for path, count in counts.items() if count > 1]
    problems = []
    if twice:
        problems.append(f"assigns {_names(twice)} twice")
    unassigned = [path for path in variables if path not in counts]
    if unassigned:
        problems.append(f"leaves {_names(unassigned)} unassigned")
    unknown = [path for path in counts if path not in variables]
    if unknown:
        problems.append(f"assigns {_names(unknown)}, which the model does not have")
    used = {key for rule in rules for key in rule.keys}
    absent = sorted(key for key in used if key not in state)
    if absent:
        problems.append(f"reads {_names(absent)}, which the state dict does not hold")
    unused = [key for key in state if key not in used]
    if unused:
        problems.append(f"uses no rule for {_names(unused)}")
    if problems:
        raise ConfigError(f"{where} {'; '.join(problems)}")
    arrays = {}
    for rule in rules:
        try:
            value = np.asarray(rule.combine([np.asarray(state[key], np.float32) for key in rule.keys]), np.float32)
        except ValueError as exc:
            raise ConfigError(f"{where}: {rule.path} from {_names(list(rule.keys), 2)}: {exc}") from None
        expected = tuple(variables[rule.path].shape)
        if value.shape != expected:
            raise ConfigError(f"{where}: {rule.path} gets shape {value.shape} from {_names(list(rule.keys), 2)}, "
                              f"the variable is {expected}")
        arrays[rule.path] = value
        if release:
            for key in rule.keys:
                state.pop(key, None)  # type: ignore[attr-defined]
    return arrays
