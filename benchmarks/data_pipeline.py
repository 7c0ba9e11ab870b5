"""Data pipeline benchmark: shard streaming rate vs training step rate, and preparation speed.

    python benchmarks/data_pipeline.py [--quick]

Writes benchmarks/results/data_pipeline.json and the "Data pipeline" section of RESULTS.md.
All rates are measured in one run on one machine, so their ratios are meaningful even on a
shared, noisy machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import machine, machine_line, markdown_table, write_json, write_readme_block, write_section


def audio_seconds(root: Path) -> float:
    import soundfile

    return sum(soundfile.info(str(p)).duration for p in (root / "train").glob("*/mixture.wav"))


def time_preparation(root: Path, out: Path, stft, config, workers: int) -> float:
    from mss_tf.data.prepare import prepare_dataset

    start = time.perf_counter()
    prepare_dataset(root, out, stft, config, splits=["train"], workers=workers, progress=False)
    return time.perf_counter() - start


def stream_rate(shard_dir: Path, stft, targets, batch_size: int, frames: int, batches: int) -> float:
    from mss_tf.data.online import OnlineAugmentConfig
    from mss_tf.data.pipeline import PipelineConfig, make_dataset

    config = PipelineConfig(batch_size=batch_size, train_frames=frames, augment=OnlineAugmentConfig())
    iterator = iter(make_dataset(shard_dir, stft, targets, config, training=True))
    for _ in range(5):  # warm-up: file opening, tracing, autotune
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - start)


def train_rate(preset: str, steps: int) -> tuple[float, int]:
    import tensorflow as tf

    from mss_tf.config import TrainConfig
    from mss_tf.models.registry import build_model
    from mss_tf.training.loop import Trainer

    config = TrainConfig(model=preset).resolve()
    spec = config.spectrogram
    batch = int(config.batch_size)
    n_targets = len(config.targets or [])
    mixture = tf.random.normal([batch, config.train_frames(), spec.n_bins, 2])
    targets = tf.random.normal([batch, n_targets, config.train_frames(), spec.n_bins, 2])
    trainer = Trainer(build_model(preset, **config.model_kwargs), config, tempfile.mkdtemp())
    trainer._build(mixture)
    trainer._train_step(mixture, targets)  # trace
    start = time.perf_counter()
    for _ in range(steps):
        trainer._train_step(mixture, targets)
    return steps * batch / (time.perf_counter() - start), batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer tracks and steps (about 3 minutes)")
    args = parser.parse_args()

    from mss_tf.config import TrainConfig
    from mss_tf.data.augment import AugmentConfig
    from mss_tf.data.demo import make_demo_set
    from mss_tf.data.prepare import PrepareConfig
    from mss_tf.data.shards import read_manifest
    from mss_tf.models.registry import get_preset

    n_tracks = 3 if args.quick else 6
    info = machine()
    tmp = Path(tempfile.mkdtemp(prefix="mss-bench-"))
    root = make_demo_set(tmp / "demo", n_train=n_tracks, n_test=1, seconds=12.0)
    # the valid split is held out of train/: prepare only the train split's tracks
    seconds = audio_seconds(root) * (n_tracks - max(1, n_tracks // 6)) / n_tracks

    results: dict = {"machine": info, "preparation": [], "streaming": [], "disk": []}
    bsrnn_stft = get_preset("bsrnn").stft
    plain = PrepareConfig()
    augmented = PrepareConfig(augment=AugmentConfig(), augment_copies=1)
    for name, config in (("no augmentation", plain), ("1 augmented copy", augmented)):
        for workers in (1, 2):
            wall = time_preparation(root, tmp / f"prep-{name[:2]}-{workers}", bsrnn_stft, config, workers)
            results["preparation"].append({"augmentation": name, "workers": workers, "audio_seconds": seconds,
                                           "wall_seconds": wall, "audio_per_wall": seconds / wall})

    for preset, batch in (("bsrnn", 2), ("unet", 4)):
        config = TrainConfig(model=preset).resolve()
        spec = config.spectrogram
        shard_dir = tmp / f"shards-{preset}"
        from mss_tf.data.prepare import prepare_dataset

        prepare_dataset(root, shard_dir, spec, PrepareConfig(), splits=["train"], progress=False)
        manifest = read_manifest(shard_dir / "train")
        per_example = manifest["bytes"] / manifest["n_examples"]
        hop_seconds = plain.crops.seconds * (1 - plain.crops.overlap)
        results["disk"].append({"preset": preset, "stft": spec.to_dict(), "dtype": manifest["dtype"],
                                "bytes_per_example": per_example,
                                "gb_per_audio_hour": per_example * 3600 / hop_seconds / 1e9})
        examples_per_s = stream_rate(shard_dir / "train", spec, config.targets, batch, config.train_frames(),
                                     10 if args.quick else 40)
        train_examples_per_s, _ = train_rate(preset, 1 if args.quick else 3)
        results["streaming"].append({"preset": preset, "batch": batch, "seconds": config.train_seconds,
                                     "pipeline_examples_per_s": examples_per_s,
                                     "train_examples_per_s": train_examples_per_s,
                                     "ratio": examples_per_s / train_examples_per_s})

    write_json("data_pipeline", results)
    prep_rows = [[r["augmentation"], r["workers"], f"{r['audio_seconds']:.0f}", f"{r['wall_seconds']:.1f}",
                  f"{r['audio_per_wall']:.2f}"] for r in results["preparation"]]
    stream_rows = [[r["preset"], r["batch"], f"{r['seconds']:g} s", f"{r['pipeline_examples_per_s']:.1f}",
                    f"{r['train_examples_per_s']:.3f}", f"{r['ratio']:.0f}x"] for r in results["streaming"]]
    disk_rows = [[r["preset"], f"{r['stft']['sample_rate']} Hz / {r['stft']['n_fft']} / {r['stft']['hop']}",
                  r["dtype"], f"{r['bytes_per_example'] / 1e6:.2f} MB", f"{r['gb_per_audio_hour']:.1f} GB"]
                 for r in results["disk"]]
    body = "\n\n".join([
        machine_line(info) + f" `python benchmarks/data_pipeline.py{' --quick' if args.quick else ''}`, "
        f"demo set of {n_tracks} train songs of 12 s.",
        "Streaming (online remix + gain + stem dropout on) against the training step of the same preset on this "
        "CPU; the goal is a ratio of at least 10 so the pipeline can feed an accelerator.",
        markdown_table(["preset", "batch", "crop", "pipeline examples/s", "train step examples/s", "ratio"], stream_rows),
        "Preparation speed (BSRNN STFT, 6 s crops with 50% overlap, quality filter on), seconds of source audio per "
        "second of wall time:",
        markdown_table(["augmentation", "workers", "audio s", "wall s", "audio s / wall s"], prep_rows),
        "Shard size per hour of source audio (6 s crops, 3 s hop, four stems + mixture, no augmented copies):",
        markdown_table(["preset", "STFT", "dtype", "per example", "per audio hour"], disk_rows),
    ])
    write_section("Data pipeline (benchmarks/data_pipeline.py)", body)
    write_readme_block("disk", f"Disk size of the shards per hour of source audio ({info['date']}, "
                       f"`benchmarks/data_pipeline.py`):\n\n"
                       + markdown_table(["preset", "STFT", "dtype", "per example", "per audio hour"], disk_rows))
    print(body)


if __name__ == "__main__":
    main()
