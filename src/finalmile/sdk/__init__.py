"""The SDK: handles users hold (`ModelVersion`, `Pipeline`, `Monitor`), the remote client, and their protocol."""
