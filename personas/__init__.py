"""The personas bundled with hearthbot (installed as the package bot.bundled_personas)."""
