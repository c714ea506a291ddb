"""Discord (discord.py): one platform, split by job."""
