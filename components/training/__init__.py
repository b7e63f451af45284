"""What every training stage shares: checkpoints, per-step seeds, the Ray Train fit wrapper,
rank-0 MLflow logging, and registry save/load of config + safetensors models."""
