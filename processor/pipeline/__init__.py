"""The streaming pipeline: decode, track offsets, batch through the models, produce, commit."""
