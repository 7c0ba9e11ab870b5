"""A reference checkpoint and its config -> an mss-tf run directory (`convert`), and the flags of
`python -m mss_tf.convert` / `mss-convert` (`build_parser`, `main`)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from mss_tf.convert.mapping import check_bands, keras_model_kwargs, keras_weights
from mss_tf.convert.reference import MODEL_TYPES, parse_config, read_config
from mss_tf.convert.state_dict import check_state_dict, read_checkpoint
from mss_tf.errors import CheckpointError

CONVERTED_FROM = "converted_from.json"  # the run directory's record of what it was converted from


def write_run(out: str | Path, config: Any, assign: Callable[[Mapping[str, Any]], dict[str, np.ndarray]],
              provenance: Mapping[str, Any] | None = None) -> Path:
    """Write a run directory at `out` that evaluate.py, separate.py and the export accept: the
    resolved `config` (a `TrainConfig`) as config.json and the model's weights, `assign(variables)`
    ({weight path: array}), as the `best/` checkpoint; `provenance` as converted_from.json.

    Atomic: everything is written into a hidden folder beside `out`, renamed to `out` at the end;
    an existing `out` is refused.
    """
    import tensorflow as tf

    from mss_tf.checkpoints import BEST, model_variables
    from mss_tf.models.registry import build_model, example_mixture

    out = Path(out)
    if out.exists():
        raise CheckpointError(f"{out}: already exists (choose a new run directory)")
    out.parent.mkdir(parents=True, exist_ok=True)
    config.resolve()
    spec = config.spectrogram
    model = build_model(config.model, spec, **config.model_kwargs)
    model(example_mixture(model, 16, spec.n_bins), training=False)
    variables = model_variables(model)
    arrays = assign(variables)
    for path, variable in variables.items():
        variable.assign(arrays.pop(path))  # popped: a paper-size model's arrays are freed as they go
    temporary = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        temporary.mkdir()
        config.save(temporary)
        if provenance is not None:
            (temporary / CONVERTED_FROM).write_text(json.dumps(dict(provenance), indent=2) + "\n")
        tf.train.Checkpoint(model=variables).save(str(temporary / BEST / "ckpt"))
        os.rename(temporary, out)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return out


def convert(checkpoint: str | Path, config_path: str | Path, out: str | Path, model_type: str | None = None,
            torch_python: str | Path | None = None) -> Path:
    """`python -m mss_tf.convert`: a reference checkpoint and its YAML config -> a run directory.

    The config is checked first (`parse_config`), then the state dict (`read_checkpoint`, through
    `torch_python` if given; `check_state_dict`), then the Keras model is built from
    `keras_model_kwargs` at the reference's STFT (`config.stft`: reflect padding) and its weights
    assigned by `keras_weights`; nothing is written unless all of it succeeds (`write_run`).
    """
    from mss_tf.config import TrainConfig

    reference = parse_config(read_config(config_path), model_type, str(config_path))
    check_bands(reference)
    state = read_checkpoint(checkpoint, torch_python)
    check_state_dict(state, reference, str(checkpoint))
    preset, kwargs = keras_model_kwargs(reference)
    targets = kwargs.pop("targets")
    spec = reference.stft
    train_seconds = reference.chunk_samples / spec.sample_rate if reference.chunk_samples else None
    config = TrainConfig(model=preset, model_kwargs=kwargs, stft=spec.to_dict(), targets=list(targets),
                         train_seconds=train_seconds)
    provenance = {"checkpoint": str(Path(checkpoint).resolve()), "config": str(Path(config_path).resolve()),
                  "model_type": reference.model_type, "reference_arguments": _plain(reference.arguments)}

    def assign(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
        return keras_weights(reference, state, variables, release=True)  # paper size: the state dict is not held twice

    return write_run(out, config, assign, provenance)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)


def build_parser(parser_class: type[argparse.ArgumentParser] = argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flags of `python -m mss_tf.convert` / `mss-convert` (which pass `mss_tf.cli.ArgumentParser`)."""
    parser = parser_class(
        prog="python -m mss_tf.convert",
        description="Convert a public PyTorch BS-RoFormer / Mel-Band RoFormer checkpoint (the models of "
                    "ZFTurbo/Music-Source-Separation-Training) and its YAML config into an mss-tf run directory "
                    "that evaluate.py, separate.py and python -m mss_tf.export take. Options the Keras models do not "
                    "implement are refused by name. Reading .ckpt/.pth/.pt needs torch: in this Python "
                    "(make convert-deps) or in another one (--torch-python).",
    )
    parser.add_argument("checkpoint", help="the state dict: .ckpt, .pth, .pt (through torch) or .npz (keys the state-dict keys)")
    parser.add_argument("--config", required=True, help="the checkpoint's YAML config, as published (model:, training:, audio:)")
    parser.add_argument("--out", required=True, help="the run directory to write (must not exist)")
    parser.add_argument("--model-type", choices=MODEL_TYPES,
                        help="the reference model class (default: training.model_type, else read from the model section: "
                             "num_bands -> mel_band_roformer, freqs_per_bands -> bs_roformer)")
    parser.add_argument("--torch-python", metavar="PYTHON",
                        help="a Python that has torch (e.g. another virtual environment's bin/python): it reads the "
                             ".ckpt/.pth/.pt in a subprocess and hands the tensors over, so torch need not be installed "
                             "here")
    return parser


def main(argv: Sequence[str] | None = None,
         parser_class: type[argparse.ArgumentParser] = argparse.ArgumentParser) -> int:
    args = build_parser(parser_class).parse_args(argv)
    out = convert(args.checkpoint, args.config, args.out, args.model_type, args.torch_python)
    print(f"wrote {out}")
    return 0
