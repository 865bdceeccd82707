"""The `mlxd` command. Modules here never import mlx, and import the catalog lazily."""
