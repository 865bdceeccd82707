"""The only mlxd code that imports mlx / mlx_lm; submodules load it lazily, types never."""
