"""Data: named sources (offline TFDS builders and the TFDS catalog), transforms, grain pipeline.

    from data import build_pipeline
    train = build_pipeline(config.data, "train", train=True, seed=0)
    batch = next(train.iterator())   # {"inputs": (B, ...), "label": (B,), "mask": (B,)}
"""

from data.arrays import split_arrays
from data.pipeline import Pipeline, build_pipeline, check_labels, describe, is_streaming
from data.sources import (
           DataError,
           SourceInfo,
           load_split,
           load_text,
           open_split,
           source_info,
)

__all__ = ["Pipeline", "build_pipeline", "check_labels", "describe", "is_streaming", "DataError",
           "SourceInfo", "load_split", "load_text", "open_split", "source_info", "split_arrays"]
