"""Streams: a deployed pipeline bound to a broker source and sink, run by `finalmile serve`."""
