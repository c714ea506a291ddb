"""`hearthbot check`: everything a start needs, one ✓/✗ line each, plus warnings.

Each check is a small function that returns a Check (never raises for an expected problem),
so a table of setups can be tested without a terminal. One module per kind of check: config,
host, model (and the openai backend's server), platforms. Network is touched only where the
setup itself points: the openai backend's server, and with `--online` the chat platforms'
login endpoints.
"""

from __future__ import annotations

from pathlib import Path

from bot.app.check.config import admin_command_warnings, config_file_warnings, personas_check
from bot.app.check.energy import energy_check
from bot.app.check.host import health_listen, port_free, writable_dir
from bot.app.check.model import model_checks
from bot.app.check.platforms import adapter_checks
from bot.app.check.report import Check, Report
from bot.settings import Settings


async def diagnose(settings: Settings, config_file: Path | None, online: bool = False) -> Report:
    """Run every check, in the order they are printed."""
    report = Report()
    report.checks.append(
        Check("config", True, str(config_file or "(none: defaults and environment)"))
    )
    report.warnings += config_file_warnings(config_file)
    report.warnings += admin_command_warnings(settings.bot.admin_commands)
    report.checks.append(personas_check(settings))
    report.checks.append(writable_dir(settings.bot.data_dir))
    await model_checks(settings, report)
    report.checks.append(energy_check(settings))
    await adapter_checks(settings, online, report)
    if listen := health_listen(settings):
        report.checks.append(port_free(listen))
    return report
