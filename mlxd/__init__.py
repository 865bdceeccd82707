"""mlxd: a benchmarking and model-management daemon for Apple's MLX."""

__version__ = "0.1.0"
