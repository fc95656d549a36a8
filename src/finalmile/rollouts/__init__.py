"""Bringing a better model in safely: replaying logged traffic through a candidate (and, next, rollouts)."""
