"""Platform adapters: each module translates one chat platform into bot.events and back."""
