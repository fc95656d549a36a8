"""Arrow at the edges: caller frames to and from Arrow, files in and out, tensor columns."""
