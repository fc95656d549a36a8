"""The composition root (`root.Services`) and the verbs it is made of, one module per noun."""

from finalmile.services.root import Services

__all__ = ["Services"]
