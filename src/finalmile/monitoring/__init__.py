"""Monitors computed from the inference log: drift assays, check rates, performance, errors, latency; alerts and
the actions they trigger."""
