"""Invariants of the generated tiny GGUF model, checked through real llama-cpp-python."""

from __future__ import annotations

import pathlib
import string
import time
from collections.abc import Iterator

import llama_cpp
import pytest
from llama_cpp import Llama

from support.tinymodel import (
    CHAT_TEMPLATE,
    IM_END_ID,
    IM_START_ID,
    MODEL_NAME,
    N_CTX_TRAIN,
    tiny_model_path,
    write_tiny_model,
)

PROMPT = "<|im_start|>user\nhello there<|im_end|>\n<|im_start|>assistant\n"
MAX_TOKENS = 64
FIRST_NORMAL_ID = 5 + 256  # specials, then the 256 byte tokens


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tiny_model_path(tmp_path_factory.mktemp("tinymodel"))


@pytest.fixture(scope="module")
def llm(model_path: pathlib.Path) -> Iterator[Llama]:
    model = Llama(model_path=str(model_path), n_ctx=512, n_threads=2, verbose=False)
    yield model
    model.close()


def test_write_is_deterministic_and_small(tmp_path: pathlib.Path) -> None:
    a = write_tiny_model(tmp_path / "a.gguf")
    b = write_tiny_model(tmp_path / "b.gguf")
    assert a.read_bytes() == b.read_bytes()
    assert 100_000 < a.stat().st_size < 1_000_000


def test_tiny_model_path_caches(tmp_path: pathlib.Path) -> None:
    first = tiny_model_path(tmp_path)
    mtime = first.stat().st_mtime_ns
    assert tiny_model_path(tmp_path) == first
    assert first.stat().st_mtime_ns == mtime  # not rewritten
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temp leftovers


def test_loads_fast_with_metadata(model_path: pathlib.Path) -> None:
    start = time.perf_counter()
    model = Llama(model_path=str(model_path), n_ctx=512, n_threads=2, verbose=False)
    elapsed = time.perf_counter() - start
    try:
        assert elapsed < 1.0
        md = model.metadata
        assert md["general.architecture"] == "llama"
        assert md["general.name"] == MODEL_NAME
        assert md["general.file_type"] == "1"  # MOSTLY_F16
        assert md["tokenizer.ggml.model"] == "llama"
        assert md["tokenizer.chat_template"] == CHAT_TEMPLATE
        assert md["llama.context_length"] == str(N_CTX_TRAIN)
        assert model._model.n_ctx_train() == N_CTX_TRAIN  # no public Llama accessor
        assert model.n_ctx() == 512
    finally:
        model.close()


def test_special_tokens(llm: Llama) -> None:
    assert llm.token_eos() == IM_END_ID
    assert llm.token_bos() == 1
    assert llm.tokenize(b"<|im_end|>", add_bos=False, special=True) == [IM_END_ID]
    assert llm.tokenize(b"<|im_start|>", add_bos=False, special=True) == [IM_START_ID]
    # Without special=True the marker is plain text, never the control token.
    plain = llm.tokenize(b"<|im_end|>", add_bos=False, special=False)
    assert IM_END_ID not in plain and len(plain) > 1
    assert llama_cpp.llama_vocab_is_eog(llm._model.vocab, IM_END_ID)


def test_tokenize_words_and_byte_fallback(llm: Llama) -> None:
    words = llm.tokenize(b"hello world", add_bos=False, special=False)
    assert len(words) == 2  # "▁hello", "▁world"
    # SentencePiece adds a space prefix, and detokenize keeps it.
    assert llm.detokenize(words) == b" hello world"
    text = "caf\u00e9 \U0001f525 \u706b\u7089 the end"
    tokens = llm.tokenize(text.encode(), add_bos=False, special=False)
    assert llm.detokenize(tokens).decode() == " " + text


def _stream(llm: Llama, seed: int) -> tuple[str, str | None]:
    llm.reset()
    chunks = llm.create_completion(
        PROMPT, max_tokens=MAX_TOKENS, temperature=0.8, seed=seed, stream=True
    )
    text, finish = "", None
    for chunk in chunks:
        choice = chunk["choices"][0]
        text += choice["text"]
        finish = choice["finish_reason"] or finish
    return text, finish


def test_generation_is_printable_text(llm: Llama) -> None:
    text, _ = _stream(llm, seed=0)
    assert text.strip()
    printable = sum(ch in string.printable for ch in text)
    assert printable / len(text) > 0.95


def test_only_word_pieces_or_eos_are_generated(llm: Llama) -> None:
    # No byte-fallback tokens (slow to stream) and never a new turn.
    prompt_tokens = llm.tokenize(PROMPT.encode(), add_bos=False, special=True)
    for seed in range(5):
        llm.reset()
        llm.set_seed(seed)
        for n, token in enumerate(llm.generate(prompt_tokens, temp=0.8)):
            assert token == IM_END_ID or token >= FIRST_NORMAL_ID
            if token == IM_END_ID or n >= MAX_TOKENS:
                break


def test_some_seeds_stop_on_eos_and_some_hit_the_limit(llm: Llama) -> None:
    results = []
    for seed in range(20):
        llm.reset()
        out = llm.create_completion(PROMPT, max_tokens=MAX_TOKENS, temperature=0.8, seed=seed)
        results.append((out["choices"][0]["finish_reason"], out["usage"]["completion_tokens"]))
    stopped = [n for reason, n in results if reason == "stop"]
    assert stopped and all(0 < n < MAX_TOKENS for n in stopped)
    assert any(reason == "length" for reason, _ in results)


def test_same_seed_same_text(llm: Llama) -> None:
    first = _stream(llm, seed=7)
    assert _stream(llm, seed=7) == first
    assert _stream(llm, seed=8) != first


def test_chat_template_renders_chatml(llm: Llama) -> None:
    out = llm.create_chat_completion(
        [{"role": "user", "content": "hello there"}], max_tokens=8, seed=1
    )
    assert out["choices"][0]["message"]["role"] == "assistant"
    assert out["usage"]["prompt_tokens"] == len(
        llm.tokenize(PROMPT.encode(), add_bos=False, special=True)
    )
