"""Data: MUSDB reading, demo set, crops, shards and the tf.data pipeline."""
