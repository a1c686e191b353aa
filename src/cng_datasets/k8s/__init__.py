"""Kubernetes: manifests (pure builders), the in-cluster orchestrator, and submit/status/logs/cleanup."""
