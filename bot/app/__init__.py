"""The process around the core: CLI, service, systemd, health, metrics, check."""
