"""Access and accountability: the audit trail of every state change (users, workspaces and tokens come next)."""
