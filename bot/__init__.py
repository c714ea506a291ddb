"""hearthbot's core: platform-neutral; never imports a chat platform's library."""
