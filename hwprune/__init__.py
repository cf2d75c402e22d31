"""hwprune: hardware-aware structured pruning of PyTorch CNNs."""

__version__ = "0.1.0"
