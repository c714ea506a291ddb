"""bot.model.llama_cpp.sampler: a reply's repeat penalty, applied to its window's tokens alone,
gives the logits and the draws of llama.cpp's own penalty sampler over the whole vocabulary.
On the real tiny GGUF, token by token against llama.cpp's chain."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from pathlib import Path

import llama_cpp
import numpy as np
import numpy.typing as npt
import pytest
from llama_cpp._internals import LlamaSampler

from bot.model.llama_cpp.batch import StepBatch
from bot.model.llama_cpp.loader import LoadedModel, PoolShape
from bot.model.llama_cpp.sampler import PENALTY_LAST_N, ReplySampler, c_chain
from bot.personas import Sampling

TOKENS = 150  # more than the window, so tokens also leave it
CANDIDATE = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)], align=True)


@pytest.fixture(scope="module")
def loaded(tiny_model: Path) -> Iterator[LoadedModel]:
    shape = PoolShape(pool_tokens=512, n_seq_max=1, step_tokens=64, n_threads=2)
    model = LoadedModel(tiny_model, shape, repack=False)
    yield model
    model.close()


def applied(sampler: LlamaSampler, logits: npt.NDArray[np.float32]) -> tuple[np.ndarray, int]:
    """The candidates after `sampler`, from a copy of the logits, and the one it selected."""
    candidates = np.zeros(len(logits), CANDIDATE)
    candidates["id"] = np.arange(len(logits))
    candidates["logit"] = logits
    data = candidates.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_token_data))
    array = llama_cpp.llama_token_data_array(data, len(logits), -1, False)
    llama_cpp.llama_sampler_apply(sampler.sampler, ctypes.byref(array))
    return candidates, int(array.selected)


@pytest.mark.parametrize("temperature", [0.0, 0.7, 1.5])
@pytest.mark.parametrize("penalty", [1.1, 1.8, 0.7, 1.0])
def test_the_window_alone_gives_llama_cpp_s_logits_and_draws(
    loaded: LoadedModel, temperature: float, penalty: float
) -> None:
    ctx, n_vocab = loaded.ctx, loaded.model.n_vocab()
    sampling = Sampling(temperature=temperature, repeat_penalty=penalty, top_k=20, min_p=0.01)
    banned = [3, 7]
    ours = ReplySampler(sampling, 11, n_vocab, banned)
    reference = c_chain(sampling, 11, n_vocab, banned, PENALTY_LAST_N)  # as before
    penalties_alone = LlamaSampler()
    penalties_alone.add_penalties(n_vocab, PENALTY_LAST_N, penalty, 0.0, 0.0)
    batch = StepBatch(64)
    llama_cpp.llama_memory_clear(loaded.memory, True)
    drawn, penalized = [], 0
    try:
        index = batch.add_run([5, 9, 12, 9, 5, 30, 31], 0, 0, True)
        for position in range(7, 7 + TOKENS):
            assert batch.decode(ctx.ctx) == 0
            row = llama_cpp.llama_get_logits_ith(ctx.ctx, index)
            before = np.ctypeslib.as_array(row, (n_vocab,)).copy()
            candidates, selected = applied(reference, before)
            token = ours.sample(ctx, index)
            assert token == int(candidates["id"][selected]), (position, drawn)
            llama_cpp.llama_sampler_accept(reference.sampler, token)
            # The logits it left in place are llama.cpp's penalized ones, bit for bit.
            after = np.ctypeslib.as_array(row, (n_vocab,)).copy()
            expected, _ = applied(penalties_alone, before)
            assert after.tobytes() == expected["logit"].tobytes()
            llama_cpp.llama_sampler_accept(penalties_alone.sampler, token)
            penalized += int((after != before).any())
            drawn.append(token)
            batch.clear()
            index = batch.add(token, position, 0, True)
    finally:
        batch.close()
        ours.close()
        reference.close()
        penalties_alone.close()
    assert not set(drawn) & set(banned)
    # Not vacuous: the penalty changed the logits at (nearly) every step but the first.
    assert penalized == (0 if penalty == 1.0 else TOKENS - 1)
