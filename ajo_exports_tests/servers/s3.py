"""Pytest fixtures for a real local server (filled in by its destination tests)."""
