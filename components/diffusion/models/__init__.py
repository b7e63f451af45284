"""The generator's parts, one file each: VAE, denoiser (UNet + ReferenceNet + Head-Kps guider +
audio, temporal and style attention), its build from params, the noise schedule."""
