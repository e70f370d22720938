"""train(): the proximal term, placing a recipe on a model (``apply``), checkpoints, and the
loop that runs a recipe."""
