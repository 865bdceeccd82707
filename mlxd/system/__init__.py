"""Facts about the machine (chip, memory, power, thermal, versions), without MLX."""
