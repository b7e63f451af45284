"""Training the generator: the VAE recipe, the three stage recipes, their one loop and stages."""
