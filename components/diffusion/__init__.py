"""The generator: VAE, denoiser (UNet + ReferenceNet + Head-Kps guider + audio, temporal and style
attention), noise schedule and sampler, and the three training stages."""
