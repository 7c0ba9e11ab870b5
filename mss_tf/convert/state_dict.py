"""The reference's state dict: what `state_dict()` holds for a `ReferenceConfig` (every key with
its shape, `expected_shapes`), the check of a checkpoint against it, and reading checkpoint files
(`.npz` with numpy; `.ckpt`/`.pth`/`.pt`/`.bin` through torch, in this Python or, with
`torch_python`, in another one that has torch: see `read_checkpoint`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from mss_tf.convert.reference import ROPE_THETA, ReferenceConfig
from mss_tf.errors import CheckpointError
from mss_tf.utils import one_line

TORCH_HINT = ("reading a PyTorch checkpoint needs torch: make convert-deps (or pip install -r requirements-convert.txt), "
              "or --torch-python PYTHON naming a Python that has torch, or a .npz of the state dict")


def rotary_frequencies(dim_head: int) -> np.ndarray:
    """rotary_embedding_torch's frequencies for `dim = dim_head`: 1 / 10000^(2i / dim_head), float32."""
    return (1.0 / ROPE_THETA ** (np.arange(0, dim_head, 2, dtype=np.float32)[: dim_head // 2] / dim_head)).astype(np.float32)


def _transformer_keys(prefix: str, depth: int, config: ReferenceConfig) -> dict[str, tuple[int, ...]]:
    a = config.arguments
    dim, heads, inner = a["dim"], a["heads"], a["heads"] * a["dim_head"]
    shapes: dict[str, tuple[int, ...]] = {}
    for j in range(depth):
        attn, ff = f"{prefix}.layers.{j}.0", f"{prefix}.layers.{j}.1"
        shapes.update({
            f"{attn}.rotary_embed.freqs": (a["dim_head"] // 2,),
            f"{attn}.norm.gamma": (dim,),
            f"{attn}.to_qkv.weight": (3 * inner, dim),
            f"{attn}.to_gates.weight": (heads, dim),
            f"{attn}.to_gates.bias": (heads,),
            f"{attn}.to_out.0.weight": (dim, inner),
            f"{ff}.net.0.gamma": (dim,),
            f"{ff}.net.1.weight": (4 * dim, dim),
            f"{ff}.net.1.bias": (4 * dim,),
            f"{ff}.net.4.weight": (dim, 4 * dim),
            f"{ff}.net.4.bias": (dim,),
        })
    if config.model_type == "mel_band_roformer":  # the reference's Transformer(norm_output=True)
        shapes[f"{prefix}.norm.gamma"] = (dim,)
    return shapes


def mask_mlp_dims(config: ReferenceConfig, band_size: int) -> list[int]:
    """Widths through one band's mask MLP: dim, the hidden layers, then 2 x the band's values (GLU)."""
    a = config.arguments
    hidden = a["dim"] * a["mlp_expansion_factor"]
    return [a["dim"], *[hidden] * (config.mask_linear_layers - 1), 2 * band_size]


def expected_shapes(config: ReferenceConfig) -> dict[str, tuple[int, ...]]:
    """Every key of the reference's `state_dict()` for `config`, with its shape, in its order."""
    a = config.arguments
    shapes: dict[str, tuple[int, ...]] = {}
    for i in range(a["depth"]):
        shapes.update(_transformer_keys(f"layers.{i}.0", a["time_transformer_depth"], config))
        shapes.update(_transformer_keys(f"layers.{i}.1", a["freq_transformer_depth"], config))
    if config.model_type == "bs_roformer":
        shapes["final_norm.gamma"] = (a["dim"],)
    sizes = config.band_sizes()
    for k, size in enumerate(sizes):
        shapes[f"band_split.to_features.{k}.0.gamma"] = (size,)
        shapes[f"band_split.to_features.{k}.1.weight"] = (a["dim"], size)
        shapes[f"band_split.to_features.{k}.1.bias"] = (a["dim"],)
    for n in range(a["num_stems"]):
        for k, size in enumerate(sizes):
            dims = mask_mlp_dims(config, size)
            for layer, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:])):
                key = f"mask_estimators.{n}.to_freqs.{k}.0.{2 * layer}"  # Linear, Tanh, Linear, ...
                shapes[f"{key}.weight"] = (fan_out, fan_in)
                shapes[f"{key}.bias"] = (fan_out,)
    return shapes


def check_state_dict(state: Mapping[str, np.ndarray], config: ReferenceConfig, where: str = "checkpoint") -> None:
    """One-line CheckpointError unless `state` holds exactly the reference's keys for `config`,
    each with its shape, and rotary frequencies equal to the reference's fixed ones."""
    expected = expected_shapes(config)
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    wrong = [f"{key} {tuple(np.shape(state[key]))} (expected {shape})" for key, shape in expected.items()
             if key in state and tuple(np.shape(state[key])) != shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} of {len(expected)} keys missing ({', '.join(missing[:3])}"
                        f"{', ...' if len(missing) > 3 else ''})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({', '.join(unexpected[:3])}"
                        f"{', ...' if len(unexpected) > 3 else ''})")
    if wrong:
        problems.append(f"{len(wrong)} of another shape ({'; '.join(wrong[:2])}{'; ...' if len(wrong) > 2 else ''})")
    if problems:
        raise CheckpointError(f"{where}: not the state dict of this {config.model_type} config: {'; '.join(problems)}")
    # the reference computes them (they are not trained); a half-precision checkpoint rounds them to
    # about 3 digits, rescaled rotary embeddings (theta, NTK factors) differ by far more
    freqs = rotary_frequencies(config.arguments["dim_head"])
    for key in expected:
        if key.endswith("rotary_embed.freqs") and not np.allclose(state[key], freqs, rtol=1e-2, atol=0):
            raise CheckpointError(f"{where}: {key} holds other rotary frequencies than 1/10000^(2i/dim_head) "
                                  "(learned or rescaled rotary embeddings are not supported)")
    for key, value in state.items():
        if not np.all(np.isfinite(value)):
            raise CheckpointError(f"{where}: {key} holds non-finite values")


_WRAPPERS = ("state_dict", "model_state_dict", "state", "model")  # {'state_dict': {...}}, ZFTurbo's full checkpoints
_PREFIXES = ("module.", "model.")  # DistributedDataParallel, Lightning


def unwrap_state_dict(data: Any, where: str) -> dict[str, Any]:
    """The state dict inside the usual wrappers, without a prefix every key carries."""
    for _ in range(3):
        if isinstance(data, Mapping) and not any(_is_tensor_like(v) for v in data.values()):
            inner = next((data[k] for k in _WRAPPERS if isinstance(data.get(k), Mapping)), None)
            if inner is None:
                break
            data = inner
    if not isinstance(data, Mapping) or not data or not all(isinstance(k, str) for k in data):
        raise CheckpointError(f"{where}: holds no state dict (a mapping of names to tensors, possibly under "
                              f"{', '.join(repr(k) for k in _WRAPPERS)})")
    state = {k: v for k, v in data.items() if _is_tensor_like(v)}
    if not state:
        raise CheckpointError(f"{where}: holds no state dict (no tensors, under none of "
                              f"{', '.join(repr(k) for k in _WRAPPERS)})")
    for prefix in _PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _is_tensor_like(value: Any) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype")


def read_checkpoint(path: str | Path, torch_python: str | Path | None = None) -> dict[str, np.ndarray]:
    """A checkpoint's state dict as float32 numpy arrays (unwrapped: `unwrap_state_dict`).

    `.npz` (keys the state-dict keys) is read with numpy alone. `.ckpt`/`.pth`/`.pt`/`.bin` go
    through torch.load(weights_only=True) on the CPU: in another Python when `torch_python` names
    one (a virtual environment with torch, so that torch never has to be in this one: it runs
    `TORCH_READER`, torch and numpy only, and hands the tensors over as a temporary .npz), else
    in this Python if it has torch (`make convert-deps`), else CheckpointError(TORCH_HINT).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.suffix == ".npz":
        data = _read_npz(path)
    elif path.suffix in (".ckpt", ".pth", ".pt", ".bin"):
        data = _torch_load_elsewhere(path, Path(torch_python)) if torch_python else _torch_load(path)
    else:
        raise CheckpointError(f"{path}: unknown checkpoint type {path.suffix!r} (.ckpt, .pth, .pt, .bin or .npz)")
    return {key: _to_numpy(value) for key, value in unwrap_state_dict(data, str(path)).items()}


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable .npz ({one_line(exc, 200)})") from None


def _torch_load(path: Path) -> Any:
    try:
        import torch
    except ImportError:
        raise CheckpointError(TORCH_HINT) from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds (UnpicklingError, RuntimeError, ...) on a bad file
        raise CheckpointError(f"{path}: {_unreadable(str(exc))}") from None


def _unreadable(reason: str) -> str:
    reason = one_line(re.sub(r"\x1b\[[0-9;]*m", "", reason), 200)  # torch's message has terminal colours
    return (f"torch.load(weights_only=True) cannot read it ({reason}); "
            "only checkpoints that hold tensors and plain containers are read")


# Run by `torch_python` (`python -c TORCH_READER CHECKPOINT OUT.npz`): torch.load(weights_only=True),
# then every tensor of the (nested, string-keyed) containers as float32, its key the path of
# names joined by "/" (a state dict's keys hold dots, never slashes). Needs torch and numpy only.
TORCH_READER = r"""
import json, sys
import numpy as np
try:
    import torch
except ImportError as exc:
    sys.exit(json.dumps({"no_torch": str(exc)}))
try:
    data = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
except Exception as exc:
    sys.exit(json.dumps({"unreadable": str(exc)}))
arrays = {}
def walk(value, path):
    if isinstance(value, torch.Tensor) and path:
        arrays["/".join(path)] = value.detach().cpu().float().numpy()
    elif isinstance(value, dict) and len(path) < 4:
        for key, item in value.items():
            if isinstance(key, str) and key and "/" not in key:
                walk(item, path + [key])
walk(data, [])
np.savez(sys.argv[2], **arrays)
"""


def _torch_load_elsewhere(path: Path, python: Path) -> dict[str, Any]:
    """`torch.load` of `path` in the Python `python` (`TORCH_READER`): the checkpoint's containers
    of tensors, nested as they were, the tensors as float32 numpy arrays."""
    with tempfile.TemporaryDirectory(prefix="mss-convert-") as folder:
        out = Path(folder) / "state.npz"
        try:
            result = subprocess.run([str(python), "-c", TORCH_READER, str(path), str(out)], capture_output=True,
                                    text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        except OSError as exc:
            raise CheckpointError(f"{python}: cannot run this Python to read {path} ({one_line(exc, 200)})") from None
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or [f"exit code {result.returncode}"])[-1]
            try:
                report = json.loads(last)
            except ValueError:
                report = {}
            if "no_torch" in report:
                raise CheckpointError(f"{python}: has no torch ({one_line(report['no_torch'], 120)}); {TORCH_HINT}")
            reason = report.get("unreadable", last)
            raise CheckpointError(f"{path}: {_unreadable(reason)}")
        flat = _read_npz(out)
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, name = key.split("/")
        folder_dict = nested
        for parent in parents:
            folder_dict = folder_dict.setdefault(parent, {})
        folder_dict[name] = value
    return nested


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, perhaps float16 or bfloat16
        value = value.detach().cpu().float().numpy()
    return np.asarray(value, np.float32)
