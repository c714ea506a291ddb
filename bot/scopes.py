"""Per-channel settings that resolve global → server → channel, as Red-DiscordBot does."""

from __future__ import annotations

from dataclasses import dataclass

from bot.events import Incoming
from bot.personas import Persona, PersonaSet, Sampling
from bot.settings import Settings, Trigger
from bot.store import RANDOM_SEED, ScopeSettings, Store
from bot.triggers import pick


@dataclass(frozen=True, slots=True)
class Resolved:
    """The persona and sampling in effect for one message, after every scope's overrides."""

    persona: Persona
    sampling: Sampling  # the persona's, with temperature and seed overrides applied

    @property
    def fixed_seed(self) -> int | None:
        return self.sampling.seed


def scopes_for(message: Incoming) -> list[str]:
    """Most specific first."""
    scopes = [f"channel:{message.channel_key}"]
    if message.server_id:
        scopes.append(f"server:{message.platform}:{message.server_id}")
    scopes.append("global")
    return scopes


def resolve(layers: list[ScopeSettings], personas: PersonaSet, default_persona: str) -> Resolved:
    """Pick each setting from the most specific layer that sets it."""
    persona_name = next((s.persona for s in layers if s.persona is not None), None)
    persona = (personas.get(persona_name) if persona_name else None) or personas.get(
        default_persona
    )
    if persona is None:  # settings validation keeps this from happening; be safe anyway
        persona = personas.personas[personas.names()[0]]
    temperature = next((s.temperature for s in layers if s.temperature is not None), None)
    seed = next((s.seed for s in layers if s.seed is not None), None)
    changes: dict[str, object] = {}
    if temperature is not None:
        changes["temperature"] = temperature
    if seed is not None:
        changes["seed"] = None if seed == RANDOM_SEED else seed
    return Resolved(persona, persona.sampling().model_copy(update=changes))


async def resolve_for(
    store: Store, message: Incoming, personas: PersonaSet, default_persona: str
) -> Resolved:
    return resolve(await store.scope_settings(scopes_for(message)), personas, default_persona)


def trigger_of(layers: list[ScopeSettings], message: Incoming, settings: Settings) -> Trigger:
    """The channel's trigger mode: set for it, its server or globally (`!trigger`), else
    the platform's config (`[discord] trigger`), else `[bot] trigger`."""
    configured = getattr(getattr(settings, message.platform, None), "trigger", None)
    return pick([*(s.trigger for s in layers), configured], settings.bot.trigger)
