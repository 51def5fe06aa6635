"""Dataplane fixtures live in dpworld.py (shared with the tests as plain helpers)."""

from dpworld import world  # noqa: F401
