"""cifarlab: a fast, honest, reproducible CIFAR-10 lab."""

__version__ = "0.1.0"
