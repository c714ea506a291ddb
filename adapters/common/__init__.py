"""What every adapter shares: splitting, background tasks, state files (the retry backoff
is the core's, bot.backoff: the responder waits out a failing store with it too)."""
