"""The generator's model parts (`models/`, one file per part), its training (`train/`: the VAE
recipe, the three stage recipes and their loop), and the data the stages read (`frames.py`,
`latents.py`, `style_prior.py`)."""
