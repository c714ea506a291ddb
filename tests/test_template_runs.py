"""bot.model.template keeps the tokens of prompts' text runs: a follow-up tokenizes only its new
turns, its tokens are those of a prompt tokenized whole, and forgetting drops what is kept."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.model.llama_cpp.backend import LlamaCppBackend
from bot.model.openai.backend import OpenAIBackend
from bot.model.template import ChatText, open_vocab


@pytest.fixture
def chat(tiny_model: Path) -> Iterator[ChatText]:
    vocab = open_vocab(tiny_model)
    yield ChatText(vocab)
    vocab.close()


@pytest.fixture
def fresh(tiny_model: Path) -> Iterator[ChatText]:
    vocab = open_vocab(tiny_model)
    yield ChatText(vocab)
    vocab.close()


def tokenized_texts(chat: ChatText, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What the vocabulary is asked to tokenize as plain text from now on."""
    seen: list[str] = []
    real = chat._llm.tokenize

    def tokenize(text: bytes, add_bos: bool = True, special: bool = False) -> list[int]:
        if not special:
            seen.append(text.decode())
        return real(text, add_bos, special)

    monkeypatch.setattr(chat._llm, "tokenize", tokenize)
    return seen


def whole(fresh: ChatText, messages: list[dict[str, str]]) -> list[int]:
    """The prompt tokenized with nothing kept from before."""
    fresh.forget()
    return fresh.prompt_tokens(messages)


TURNS = [
    {"role": "system", "content": "You are a patient tutor."},
    {"role": "user", "content": "alice: what is a prime number?"},
    {"role": "assistant", "content": "A number with exactly two divisors: 1 and itself."},
]
FOLLOW_UP = [
    *TURNS,
    {"role": "user", "content": "alice: and is 1 one?"},
    {"role": "assistant", "content": " No:  it has one divisor.\n"},
    {"role": "user", "content": "bob: why does that matter?"},
]


def test_a_follow_up_tokenizes_only_its_new_turns(
    chat: ChatText, fresh: ChatText, monkeypatch: pytest.MonkeyPatch
) -> None:
    chat.prompt_tokens(TURNS)
    seen = tokenized_texts(chat, monkeypatch)
    tokens = chat.prompt_tokens(FOLLOW_UP)
    assert tokens == whole(fresh, FOLLOW_UP)  # the same as tokenized whole
    assert seen and all("prime" not in text and "tutor" not in text for text in seen)
    assert any("is 1 one?" in text for text in seen)
    seen.clear()
    assert chat.prompt_tokens(FOLLOW_UP) == tokens
    assert seen == []  # every run kept


def test_kept_runs_give_the_tokens_of_a_whole_prompt_across_many_conversations(
    chat: ChatText, fresh: ChatText
) -> None:
    texts = ["", " ", "\n", "hi", " hi ", "é\n\n", "<|im_end|>", "a" * 300, "  two  spaces  "]
    for first in texts:
        for second in texts:
            messages = [
                {"role": "system", "content": first},
                {"role": "user", "content": second},
                {"role": "assistant", "content": first + second},
                {"role": "user", "content": second + first},
            ]
            assert chat.prompt_tokens(messages) == whole(fresh, messages)
            fresh.forget()
            assert chat.opening_tokens(messages) == fresh.opening_tokens(messages)


def test_forget_drops_every_kept_run(chat: ChatText, monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = chat.prompt_tokens(TURNS)
    assert chat._run_tokens.bytes > 0
    chat.forget()
    assert chat._run_tokens.bytes == 0 and len(chat._run_tokens) == 0
    seen = tokenized_texts(chat, monkeypatch)
    assert chat.prompt_tokens(TURNS) == tokens
    assert any("prime" in text for text in seen)  # tokenized again: nothing was kept


def test_a_run_tokenized_while_a_forget_happens_is_not_kept(
    chat: ChatText, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = chat._plain

    def forgotten_meanwhile(text: str) -> list[int]:
        tokens = plain(text)
        chat.forget()  # from another thread, between the tokenizing and the keeping
        return tokens

    monkeypatch.setattr(chat, "_plain", forgotten_meanwhile)
    chat.prompt_tokens(TURNS)
    assert len(chat._run_tokens) == 0


async def test_llama_cpp_backend_forgets_the_kept_runs(tiny_model: Path) -> None:
    backend = await LlamaCppBackend.load(tiny_model, n_ctx=1024, n_threads=1, n_batch=256)
    try:
        await forgets_on_each_kind_of_forget(backend)
    finally:
        await backend.close()


async def test_openai_backend_forgets_the_kept_runs(tiny_model: Path) -> None:
    backend = await OpenAIBackend.load(tiny_model, "http://127.0.0.1:9", n_ctx=1024)
    try:
        await forgets_on_each_kind_of_forget(backend)
    finally:
        await backend.close()


async def forgets_on_each_kind_of_forget(backend: Any) -> None:
    for key in ("discord:1", None):  # one channel (its text is in the runs too), every one
        backend.prompt_tokens(TURNS)
        assert backend._text._run_tokens.bytes > 0
        await backend.forget(key)
        assert backend._text._run_tokens.bytes == 0
