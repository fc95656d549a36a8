"""Serving: the transport-free data plane over a backend, codecs by content type, metrics, and `http/`."""
