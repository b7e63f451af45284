"""The intrinsic style prior: extractor model, contrastive objective, batching."""
