"""Training: optimisers, the training session of CLI and add-in, metrics, results written back."""
