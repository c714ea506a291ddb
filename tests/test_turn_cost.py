"""What a chat template writes around the messages, in tokens (bot.prompt.overheads), measured
on the model's own template, and the window that follows from it: a conversation that fits
is sent whole, not trimmed early."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.prompt.builder import TooLong
from bot.prompt.overheads import Overheads
from support.daemons import daemon_for
from support.recording_adapter import message
from support.tinymodel import CHAT_TEMPLATE, write_tiny_model

_END = "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
TEMPLATES = {
    "chatml": CHAT_TEMPLATE,
    # Qwen2.5's: a default system prompt when the messages have none (ours always have one).
    "default system prompt": (
        "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful "
        "assistant, created by a company far away, and you answer every question.<|im_end|>\\n'"
        " }}{% endif %}" + CHAT_TEMPLATE
    ),
    # Llama 3.1's kind: a header written in the system turn of every prompt.
    "dated system turn": (
        "{{ '<|im_start|>system\\nToday is the first day of the month of May.\\n' }}"
        "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}{% endif %}"
        "{{ '<|im_end|>\\n' }}{% for m in messages %}{% if m['role'] != 'system' %}"
        "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
        "{% endif %}{% endfor %}" + _END
    ),
    # Mistral's kind: a user's turn carries more markers than an assistant's.
    "wordy user turns": (
        "{% for m in messages %}{% if m['role'] == 'user' %}"
        "{{ '<|im_start|>user\\nthe question is: ' + m['content'] + '<|im_end|>\\n' }}"
        "{% else %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
        "{% endif %}{% endfor %}" + _END
    ),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("templates")
    return {
        name: write_tiny_model(folder / f"{i}.gguf", chat_template=template)
        for i, (name, template) in enumerate(TEMPLATES.items())
    }


async def overheads(tmp_path: Path, model: Path) -> Overheads:
    async with daemon_for(tmp_path, model, start=False) as (daemon, _):
        context = daemon.context
        return Overheads(context.turn_overhead, context.reply_overhead, context.prompt_overhead)


async def test_what_each_template_writes_is_counted_where_it_is_written(
    tmp_path: Path, models: dict[str, Path]
) -> None:
    found = {
        name: await overheads(tmp_path / str(i), m) for i, (name, m) in enumerate(models.items())
    }
    chatml = found["chatml"]
    assert chatml.turn > 0 and chatml.reply > 0
    # Written only without a system message: no cost of ours at all.
    assert found["default system prompt"] == chatml
    # Written once per prompt: the prompt's cost, not each turn's.
    dated = found["dated system turn"]
    assert (dated.turn, dated.reply) == (chatml.turn, chatml.reply)
    assert dated.prompt >= chatml.prompt + 8
    # A turn costs the larger of a user's and an assistant's markers.
    wordy = found["wordy user turns"]
    # (Here the user's 7 more tokens, not their average over both roles.)
    assert wordy.turn >= chatml.turn + 6 and wordy.reply == chatml.reply


@pytest.mark.parametrize("template", ["chatml", "default system prompt"])
async def test_a_conversation_that_fits_is_not_trimmed(
    tmp_path: Path, models: dict[str, Path], template: str
) -> None:
    async with daemon_for(
        tmp_path, models[template], start=False, n_ctx=512, queue={"per_user_per_minute": 100}
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
