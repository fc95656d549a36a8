"""Serving: deployments, adaptive batching, the transport-free data plane, codecs and the HTTP adapter."""
