"""The models: text embeddings, transaction features, the anomaly scorer, document novelty."""
