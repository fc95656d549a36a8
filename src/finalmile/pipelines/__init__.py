"""Pipelines: ordered steps (models, transforms, A/B splits, shadows, checks), versioned, run over Arrow batches."""
