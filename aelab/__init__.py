"""aelab: a config-driven toolkit for training and exploring autoencoders."""

__version__ = "0.1.0"
