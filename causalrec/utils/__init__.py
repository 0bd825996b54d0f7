"""Shared helpers: the one door for parameter validation."""
