"""The team server (`mlxd serve`): dashboard, JSON API, metrics, tokens and roles."""
