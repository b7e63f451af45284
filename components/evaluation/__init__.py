"""Evaluation metrics: FID (TF-Inception features) and FVD (Kinetics-400 I3D features)."""
