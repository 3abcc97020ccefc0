"""A daemonless OCI distribution client: pull (bundle build) and push (Harbor seed)."""
