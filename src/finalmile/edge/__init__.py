"""Edge sites: bundles that serve a pinned pipeline offline, and the link that ships their logs home."""
