"""The MLflow registry: the generator's parts and the generator itself as models-from-code
pyfuncs (nothing pickled), and loading them back."""
