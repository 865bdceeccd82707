"""Alembic migrations for the catalog, shipped inside the package so a daemon upgrades its DB."""
