"""HTTP for the data plane and the management API: a raw ASGI router for inference, FastAPI for the rest."""
