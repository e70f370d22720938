"""Inputs: labelled data (builtins and user files, splits, probe samples), models (the one
module that imports transformers) and label-word prompts."""
