"""Tower runners: turn a batch of model inputs into L2-normalised float32 embeddings."""
