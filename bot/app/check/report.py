"""The result of `hearthbot check`: one Check per thing checked, plus warnings."""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.masking import mask_url

# A failure of one of these is a configuration problem (exit 2, like a bad config file).
CONFIG_CHECKS = ("config", "personas")


@dataclass(frozen=True, slots=True)
class Check:
    """One checked thing: its name, whether it passed, and what was found."""

    name: str
    ok: bool
    detail: str

    @property
    def line(self) -> str:
        return f"{'✓' if self.ok else '✗'} {self.name}: {self.detail}"


@dataclass(slots=True)
class Report:
    """Every check and warning of one run, as printed lines and an exit code."""

    checks: list[Check] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def exit_code(self) -> int:
        if any(c.name in CONFIG_CHECKS for c in self.failed):
            return 2
        return 1 if self.failed else 0

    def lines(self) -> list[str]:
        """What is printed; a URL the settings name is shown without its user:password."""
        out = [c.line for c in self.checks]
        out += [f"warning: {w}" for w in self.warnings]
        failed = len(self.failed)
        out.append("ok" if not failed else f"{failed} check{'s' * (failed > 1)} failed")
        return [mask_url(line) for line in out]
