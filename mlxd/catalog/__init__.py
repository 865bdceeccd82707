"""The catalog: every model with its lineage, every job, every benchmark, in one SQLite file."""
