"""What every adapter shares: splitting, background tasks, state files, backoff."""
