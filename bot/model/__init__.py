"""What generates text: backend-neutral types, the backend protocol, and the backends."""
