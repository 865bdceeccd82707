"""Turning catalog rows into what a person reads: results tables, comparisons, sweep tables."""
