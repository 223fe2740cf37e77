"""Training and evaluating models: labels, chips with a spatial split, the training loop, accuracy."""
