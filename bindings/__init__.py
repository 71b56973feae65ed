"""Adapters for other tracking frontends (none yet)."""
