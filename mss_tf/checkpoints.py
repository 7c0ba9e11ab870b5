"""Model weights in checkpoints: what training saves and inference restores.

Checkpoints track dictionaries of variables rather than the model object: Keras 3 layers held in
Python lists (encoder/decoder stacks, BSRNN modules) are invisible to `tf.train.Checkpoint`'s
object graph, which would silently save and restore only part of the model. Each weight is keyed
by its path of attribute names from the model (``band_sequence/3/band_rnn/norm/gamma``): stable
across processes, unlike Keras' auto-generated layer names (``conv2d_1``), and unlike a position
in ``model.weights``, a reordered model cannot restore swapped weights of equal shapes (a module's
time and band BLSTMs) without an error. Checkpoints written before paths were used key weights
by position (``w00000``); they are recognised and still load.

A checkpoint whose files are missing, truncated or corrupt raises DamagedCheckpointError naming
it (one line, never TensorFlow's traceback); `checkpoint_history` lists a folder's checkpoints
newest first, so training can resume from the newest intact one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from mss_tf.errors import CheckpointError, DamagedCheckpointError
from mss_tf.utils import one_line

CHECKPOINTS = "checkpoints"  # the latest training states of a run (rolling)
# where a SavedModel export keeps its metadata (mss_tf.export), with the weight path of each of
# its variables: TensorFlow's folder for files a SavedModel carries but never reads
EXPORT_METADATA_DIR, EXPORT_METADATA_FILE = "assets.extra", "mss_tf.json"
BEST = "best"  # the training state with the best validation loss


PATHS = "path"  # weights keyed by attribute path (checkpoints written since the cleanup)
POSITIONS = "position"  # weights keyed by position in model.weights (older checkpoints)


def weight_paths(model: keras.Model) -> dict[int, str]:
    """``id(variable) -> "attribute/path/name"`` for every variable a model owns.

    Walks the public attributes that hold layers (or lists of layers), in assignment order; a
    variable reachable twice keeps its first path. Keras' private attributes are not followed.
    """
    paths: dict[int, str] = {}

    def walk(layer: keras.layers.Layer, prefix: tuple[str, ...], seen: set[int]) -> None:
        if id(layer) in seen:
            return
        seen.add(id(layer))
        for variable in [*layer._trainable_variables, *layer._non_trainable_variables]:
            paths.setdefault(id(variable), "/".join((*prefix, variable.name)))
        for name, value in vars(layer).items():
            if name.startswith("_"):
                continue
            if isinstance(value, keras.layers.Layer):
                walk(value, (*prefix, name), seen)
            elif isinstance(value, (list, tuple)):
                for index, item in enumerate(value):
                    if isinstance(item, keras.layers.Layer):
                        walk(item, (*prefix, name, str(index)), seen)

    walk(model, (), set())
    return paths


def model_variables(model: keras.Model, layout: str = PATHS) -> dict[str, tf.Variable]:
    """Every weight of a built model, keyed by its attribute path (or, for a checkpoint of the
    older layout, by its position in `model.weights`)."""
    if layout == POSITIONS:
        return {f"w{i:05d}": v for i, v in enumerate(model.weights)}
    paths = weight_paths(model)
    keyed: dict[str, tf.Variable] = {}
    for variable in model.weights:
        key = paths.get(id(variable))
        if key is None or key in keyed:
            raise CheckpointError(
                f"{type(model).__name__}: weight {variable.path} is not held by a public layer attribute "
                "(or shares its path with another), so it has no stable checkpoint key"
            )
        keyed[key] = variable
    return keyed


def rng_variables(model: keras.Model) -> dict[str, tf.Variable]:
    """The model's random-generator states (dropout seeds): not weights, but an exact resume needs them."""
    weights = {id(v) for v in model.weights}
    return {f"r{i:05d}": v for i, v in enumerate(v for v in model.variables if id(v) not in weights)}


def _checkpoint_key(name: str, key: str) -> str:
    """The name under which `tf.train.Checkpoint(name={key: variable})` stores the variable
    (TensorFlow escapes "." as ".." and "/" as ".S" in object names)."""
    return f"{name}/{key.replace('.', '..').replace('/', '.S')}/.ATTRIBUTES/VARIABLE_VALUE"


# what TensorFlow raises on checkpoint files that are missing, cut short or corrupt: OpError
# (NotFound, DataLoss: "not an sstable", checksum mismatch), IndexError ("Read less bytes than
# requested" from a truncated data file)
_DAMAGE = (tf.errors.OpError, IndexError)


def _damaged(checkpoint: str, error: BaseException) -> DamagedCheckpointError:
    text = getattr(error, "message", None) or str(error) or type(error).__name__
    return DamagedCheckpointError(f"{checkpoint}: damaged checkpoint, its files are missing, truncated or corrupt "
                                  f"({one_line(text.split(' [Op:')[0], 160)})")


def _shapes(checkpoint: str) -> dict[str, list[int]]:
    """The variable shapes recorded in a checkpoint's index; DamagedCheckpointError if unreadable."""
    try:
        return tf.train.load_checkpoint(checkpoint).get_variable_to_shape_map()
    except _DAMAGE as error:
        raise _damaged(checkpoint, error) from None


def checkpoint_history(folder: str | Path) -> list[str]:
    """The checkpoints of a CheckpointManager folder (``ckpt-N`` prefixes), newest first.

    From the folder's ``checkpoint`` state file, whether or not their files are intact (reading
    one tells: DamagedCheckpointError); without a readable state file, the ``.index`` files there.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    state = tf.train.get_checkpoint_state(str(folder)) if (folder / "checkpoint").is_file() else None
    if state is not None and state.model_checkpoint_path:
        listed = [state.model_checkpoint_path, *reversed(state.all_model_checkpoint_paths)]
        return list(dict.fromkeys(listed))

    def number(index: Path) -> int:  # ckpt-12.index -> 12
        found = re.search(r"-(\d+)$", index.stem)
        return int(found.group(1)) if found else -1

    return [str(path.with_suffix("")) for path in sorted(folder.glob("*.index"), key=number, reverse=True)]


def restore_checkpoint(checkpoint: tf.train.Checkpoint, path: str) -> Any:
    """`checkpoint.restore(path)`; DamagedCheckpointError (one line naming `path`) when its files
    cannot be read. Returns the restore status."""
    try:
        return checkpoint.restore(path)
    except _DAMAGE as error:
        raise _damaged(path, error) from None


def checkpoint_layout(checkpoint: str) -> str:
    """PATHS or POSITIONS: how the saved model weights are keyed in `checkpoint`."""
    return POSITIONS if _checkpoint_key("model", "w00000") in _shapes(checkpoint) else PATHS


def check_weights(checkpoint: str, variables: dict[str, tf.Variable], what: str) -> None:
    """Raise a one-line CheckpointError unless `checkpoint` holds every variable with its shape
    (DamagedCheckpointError when its index cannot be read)."""
    shapes = _shapes(checkpoint)
    missing, mismatched = [], []
    for key, variable in variables.items():
        saved = shapes.get(_checkpoint_key("model", key))
        if saved is None:
            missing.append(key)
        elif tuple(saved) != tuple(variable.shape):
            mismatched.append(f"{key} {tuple(saved)} in the checkpoint, {tuple(variable.shape)} in the model")
    if missing or mismatched:
        found = [f"{len(missing)} of {len(variables)} weights missing (first: {missing[0]})"] if missing else []
        found += [f"{len(mismatched)} with another shape (first: {mismatched[0]})"] if mismatched else []
        raise CheckpointError(f"{checkpoint}: does not hold {what}: {'; '.join(found)}")


def restore_weights(model: keras.Model, run_dir: str | Path, which: str = "best") -> str:
    """Load trained weights from a run directory ("best", else the latest checkpoint).

    The model must be built; every one of its weights must be found in the checkpoint, under its
    path (or position, for older checkpoints) and with its shape. The newest checkpoint of the
    folder is the one used: if its files are damaged, DamagedCheckpointError names it (a model
    silently restored from another checkpoint than the one asked for would be worse).
    """
    run_dir = Path(run_dir)
    candidates = [run_dir / BEST, run_dir / CHECKPOINTS] if which == "best" else [run_dir / CHECKPOINTS]
    for folder in candidates:
        history = checkpoint_history(folder)
        if history:
            latest = history[0]
            variables = model_variables(model, checkpoint_layout(latest))
            check_weights(latest, variables, f"this model's weights ({type(model).__name__})")
            status = restore_checkpoint(tf.train.Checkpoint(model=variables), latest)
            status.assert_existing_objects_matched().expect_partial()
            return latest
    raise CheckpointError(f"{run_dir}: run directory has no checkpoints")


def write_untrained_run(run_dir: str | Path, preset: str) -> Path:
    """A run directory holding `preset`'s resolved config and its untrained (initial) weights as
    the best checkpoint: what benchmarks and tests time or export without training a model."""
    from mss_tf.config import TrainConfig
    from mss_tf.models.registry import build_model, example_mixture

    run_dir = Path(run_dir)
    config = TrainConfig(model=preset).resolve()
    run_dir.mkdir(parents=True)
    config.save(run_dir)
    model = build_model(config.model, **config.model_kwargs)
    model(example_mixture(model, 16, config.spectrogram.n_bins), training=False)
    tf.train.Checkpoint(model=model_variables(model)).save(str(run_dir / BEST / "ckpt"))
    return run_dir
