"""What one turn costs in a prompt, measured on the model's own template, and the window that
follows from it: a conversation that fits is sent whole, not trimmed early."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.prompt.builder import TooLong
from support.daemons import daemon_for
from support.recording_adapter import message
from support.tinymodel import CHAT_TEMPLATE, write_tiny_model

# Qwen2.5's templates write a default system prompt when the messages have none: a cost of the
# conversation's first turn, never of each turn.
DEFAULT_SYSTEM = (
    "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful "
    "assistant, created by a company far away, and you answer every question.<|im_end|>\\n' }}"
    "{% endif %}"
)


@pytest.fixture(scope="module")
def default_system_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("qwen-like") / "tiny-default-system.gguf"
    return write_tiny_model(path, chat_template=DEFAULT_SYSTEM + CHAT_TEMPLATE)


@pytest.mark.parametrize("template", ["chatml", "default system prompt"])
async def test_a_conversation_that_fits_is_not_trimmed(
    tmp_path: Path, tiny_model: Path, default_system_model: Path, template: str
) -> None:
    model = tiny_model if template == "chatml" else default_system_model
    async with daemon_for(
        tmp_path, model, start=False, n_ctx=512, queue={"per_user_per_minute": 100}
    ) as (daemon, _adapter):
        for i in range(16):
            await daemon.handle(message(f"water {i} and fire"))
        prompt = await daemon.context.build(
            "test:c1", "sys", reserve=64, multi_user=False, through_row=10**9
        )
        assert not isinstance(prompt, TooLong)
        # Far below the budget (512 − 64 for the reply): every turn is sent, nothing doomed.
        assert len(prompt.tokens) < 0.6 * (512 - 64), len(prompt.tokens)
        assert not prompt.window.trimmed
        assert len(prompt.messages) == 1 + 16


async def test_a_default_system_prompt_is_no_turns_cost(
    tmp_path: Path, tiny_model: Path, default_system_model: Path
) -> None:
    """Both templates write the same markers around a turn and open the reply alike; the
    default system prompt, written once and replaced by the persona's, costs no turn."""
    overheads = []
    for number, model in enumerate((tiny_model, default_system_model)):
        async with daemon_for(tmp_path / str(number), model, start=False) as (daemon, _):
            overheads.append((daemon.context.turn_overhead, daemon.context.reply_overhead))
    assert overheads[0] == overheads[1]
    assert overheads[0][0] > 0 and overheads[0][1] > 0
