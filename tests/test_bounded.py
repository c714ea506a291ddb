"""bot.bounded: caches bounded by the bytes they hold, not by their number of entries."""

from __future__ import annotations

import pytest

from bot.bounded import ENTRY_OVERHEAD, SizedCache, text_bytes, text_key


def weigh(key: str, value: str) -> int:
    return len(key) + len(value)


@pytest.mark.parametrize(
    ("puts", "max_bytes", "kept"),
    [
        ([("a", "1"), ("b", "2")], 2 * (2 + ENTRY_OVERHEAD), ["a", "b"]),
        # Over the bound: the oldest go, however few entries there are.
        ([("a", "1"), ("b", "2"), ("c", "3")], 2 * (2 + ENTRY_OVERHEAD), ["b", "c"]),
        ([("a", "1"), ("b", "x" * 500)], 600 + ENTRY_OVERHEAD, ["b"]),
        # Heavier than the whole bound: not kept, and nothing else is pushed out for it.
        ([("a", "1"), ("big", "x" * 10_000)], 1000, ["a"]),
        # Put again: one entry, weighed as it is now.
        ([("a", "1"), ("a", "x" * 100), ("b", "2")], 2 * ENTRY_OVERHEAD + 104, ["a", "b"]),
    ],
)
def test_entries_kept_within_the_byte_bound(
    puts: list[tuple[str, str]], max_bytes: int, kept: list[str]
) -> None:
    cache: SizedCache[str, str] = SizedCache(max_bytes, weigh)
    for key, value in puts:
        cache.put(key, value)
        assert cache.bytes <= max_bytes
    assert [key for key in kept if key in cache] == kept and len(cache) == len(kept)
    assert cache.bytes == sum(weigh(k, cache.get(k) or "") + ENTRY_OVERHEAD for k in kept)


def test_use_keeps_an_entry_and_pop_frees_its_bytes() -> None:
    cache: SizedCache[str, str] = SizedCache(2 * (2 + ENTRY_OVERHEAD), weigh)
    cache.put("a", "1")
    cache.put("b", "2")
    assert cache.get("a") == "1"  # now the most recent: "b" goes first
    cache.put("c", "3")
    assert "a" in cache and "b" not in cache and cache.get("b") is None
    assert cache.pop("a") == "1" and cache.pop("a") is None
    assert cache.bytes == 2 + ENTRY_OVERHEAD
    cache.clear()
    assert len(cache) == 0 and cache.bytes == 0 and cache.get("c") is None


def test_text_bytes_grows_with_the_text_and_its_widest_character() -> None:
    assert text_bytes(None) == 0
    assert text_bytes("x" * 2000) - text_bytes("x" * 1000) == 1000
    assert text_bytes("😀" * 1000) > 4000 > text_bytes("é" * 1000) > 1000


def test_text_key_is_short_stable_and_tells_texts_apart() -> None:
    texts = ["", "a", "a ", "é", "e\u0301", "x" * 100_000, "\ud800 lone surrogate"]
    keys = [text_key(t) for t in texts]
    assert all(len(k) == 32 for k in keys)
    assert len(set(keys)) == len(texts)  # text that looks alike is still another key
    assert [text_key(t) for t in texts] == keys
