"""One module per generation task: how its prompt is filled and how its answer is parsed."""
