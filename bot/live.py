"""What the parts of a running daemon share and may see replaced while it runs.

SIGHUP's reload swaps the settings and personas, the service puts its metrics in as the
observer, and `stop` turns intake into deferral. Intake, responder, retention and commands
read these here at each use, so none of them keeps a stale copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.events import Adapter, Incoming
from bot.observer import Observer
from bot.personas import PersonaSet
from bot.settings import LIVE_BOT_SETTINGS, Settings


@dataclass(slots=True)
class Live:
    """The daemon's replaceable parts: settings, personas, adapters, observer, stopping."""

    settings: Settings
    personas: PersonaSet
    adapters: dict[str, Adapter]
    observer: Observer = field(default_factory=Observer)  # metrics, when served, replace it
    stopping: bool = False

    def is_admin(self, message: Incoming) -> bool:
        return self.is_admin_user(message.user_key, message.is_admin)

    def is_admin_user(self, user_key: str, adapter_says: bool) -> bool:
        """An admin by its adapter's access lists, or named in `[bot] admins`."""
        return adapter_says or user_key in self.settings.bot.admins

    def reload(self, settings: Settings, personas: PersonaSet) -> None:
        """Take the personas, the live [bot] settings and the running adapters' sections from
        a reloaded config. The rest (model, queue sizes, data_dir, ...) needs a restart and is
        left alone."""
        bot = self.settings.bot.model_copy(
            update={name: getattr(settings.bot, name) for name in LIVE_BOT_SETTINGS}
        )
        platforms = {
            name: getattr(settings, name)
            for name in self.adapters
            if name in type(settings).model_fields
        }
        self.settings = self.settings.model_copy(update={"bot": bot, **platforms})
        self.personas = personas
