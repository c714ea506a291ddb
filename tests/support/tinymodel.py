"""Generate a tiny, deterministic llama-architecture GGUF chat model for tests.

The model is random noise on purpose, but its output head is biased so that
sampling produces mostly whole printable word pieces, sometimes emits the
ChatML end token ``<|im_end|>`` (the EOS), and never ``<|im_start|>``.  That
makes it good enough to drive real llama-cpp-python end to end in tests and
benchmarks without downloading anything.

How the bias works: every token embedding has a constant value in hidden
dimension 0 (the "bias channel"), the transformer blocks neither read nor
write that dimension, so after the final RMSNorm dimension 0 is an almost
constant, large value.  Column 0 of ``output.weight`` therefore acts as a
per-token logit bias we choose freely; the other columns add a small,
context-dependent random term so that different contexts and seeds differ.
The EOS row gets no random term (its stop rate stays predictable), and a
second reserved dimension, set only in the embedding of the newline byte,
vetoes EOS right after "\n" so a ChatML reply ("...assistant\n") is never
empty.

Usage: ``python tests/support/tinymodel.py OUT.gguf``.
"""

from __future__ import annotations

import os
import pathlib
import sys
import tempfile
from collections.abc import Callable

import gguf
import numpy as np

MODEL_NAME = "hearthbot-tiny-test"
FILE_NAME = "hearthbot-tiny-test-f16.gguf"
SEED = 20240611

# Architecture (llama, GQA).
N_EMBD = 64
N_HEAD = 4
N_HEAD_KV = 2
HEAD_DIM = N_EMBD // N_HEAD
# The variant for quantized KV caches: q8_0 and q4_0 store blocks of 32 values, and llama.cpp
# refuses a head narrower than a block. Same weights (one KV head of 32 instead of two of 16).
WIDE_HEADS = (2, 1)
N_FF = 128
N_LAYER = 2
N_CTX_TRAIN = 4096
ROPE_FREQ_BASE = 10000.0
RMS_EPS = 1e-5

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

SPACE = "\u2581"  # SentencePiece's "▁" word-boundary marker.

# Special token ids (fixed positions at the start of the vocab).
UNK_ID = 0
BOS_ID = 1
EOS_S_ID = 2  # "</s>": present like in real SPM vocabs, but not the EOS we use.
IM_START_ID = 3
IM_END_ID = 4  # the EOS token
BYTE_BASE_ID = 5  # <0x00> .. <0xFF> occupy ids 5 .. 260

# Whole words, most "frequent" first: earlier words get a higher logit bias.
_WORD_TEXT = """
the I you a and to is it that of in we can hello my be for this have with
what are not do on your so me all just like there here about how will would
yes no if think know good time friend day some more one well fire warm
hearth home tea story night light cozy wood chat bot help sure maybe today
tell make see want was but or they them he she his her an at by from up out
now then when where why who which could should very really nice great thanks
please sorry okay let go come say look love new old world little big long
way thing people year water cat dog book word name question answer idea
place hand head
"""
# Role names go last: short ChatML prompts, yet rarely generated.
WORDS: tuple[str, ...] = (*_WORD_TEXT.split(), "user", "assistant", "system")

PUNCTUATION: tuple[str, ...] = (".", ",", "!", "?", "'", ":", ";", "-")

# Logit biases (in logits at temperature 1.0).
ZIPF = 0.35  # word bias = -ZIPF * ln(rank + 1)
PUNCT_BIAS = {".": -0.6, ",": -0.9, "!": -1.8, "?": -1.8}
OTHER_PUNCT_BIAS = -4.0
EOS_BIAS = -0.4  # tuned so a decent fraction of 64-token generations stop early
FRAGMENT_BIAS = -9.0  # word prefixes like "▁hel" and bare letters/digits
BYTE_BIAS = -30.0  # byte-fallback tokens: never generate raw bytes
SPECIAL_BIAS = -30.0  # <unk>, <s>, </s>
IM_START_BIAS = -40.0  # never start a new turn
NOISE_STD = 0.15  # std of the random (context-dependent) output columns

BIAS_CHANNEL = 1.0  # value of hidden dim 0 in every embedding
NEWLINE_CHANNEL = 0.5  # value of hidden dim 1, only in the "<0x0A>" embedding
EOS_AFTER_NEWLINE = -20.0  # extra EOS logit right after a newline
N_RESERVED = 2  # dims 0 and 1 bypass the transformer blocks
EMBD_STD = 0.04  # std of the remaining embedding dims (kept << BIAS_CHANNEL)
LAYER_STD = 0.08


def _build_vocab() -> tuple[list[str], list[float], list[int], np.ndarray]:
    """Return tokens, SentencePiece scores, token types and per-token logit bias."""
    tokens: list[str] = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    types: list[int] = [
        gguf.TokenType.UNKNOWN,
        gguf.TokenType.CONTROL,
        gguf.TokenType.CONTROL,
        gguf.TokenType.CONTROL,
        gguf.TokenType.CONTROL,
    ]
    bias: list[float] = [SPECIAL_BIAS, SPECIAL_BIAS, SPECIAL_BIAS, IM_START_BIAS, EOS_BIAS]

    # All 256 byte-fallback pieces so any UTF-8 text (emoji, CJK) tokenizes.
    for b in range(256):
        tokens.append(f"<0x{b:02X}>")
        types.append(gguf.TokenType.BYTE)
        bias.append(BYTE_BIAS)

    pieces: dict[str, float] = {}
    # The bare space marker and every printable ASCII character (no space).
    pieces[SPACE] = FRAGMENT_BIAS
    for code in range(33, 127):
        ch = chr(code)
        pieces[ch] = PUNCT_BIAS.get(ch, OTHER_PUNCT_BIAS if ch in PUNCTUATION else FRAGMENT_BIAS)
    # "▁word" plus every "▁" prefix of it: SentencePiece merges adjacent pairs
    # only when the concatenation is itself a token, so prefixes give a merge
    # path from single characters up to the whole word.
    for rank, word in enumerate(WORDS):
        for k in range(1, len(word)):
            pieces.setdefault(SPACE + word[:k], FRAGMENT_BIAS)
        pieces[SPACE + word] = -ZIPF * float(np.log(rank + 1))

    for piece, b_ in pieces.items():
        tokens.append(piece)
        types.append(gguf.TokenType.NORMAL)
        bias.append(b_)

    # Scores only order SentencePiece merges; longer pieces win so whole
    # words are preferred.  Specials/bytes get 0 as in real llama vocabs.
    scores = [0.0] * len(tokens)
    for i in range(BYTE_BASE_ID + 256, len(tokens)):
        scores[i] = float(len(tokens[i])) - i * 1e-4
    return tokens, scores, [int(t) for t in types], np.asarray(bias, dtype=np.float64)


def _normal(rng: np.random.RandomState, shape: tuple[int, ...], std: float) -> np.ndarray:
    return (rng.standard_normal(shape) * std).astype(np.float32)


def _build_tensors(bias: np.ndarray) -> dict[str, np.ndarray]:
    """Deterministic weights; numpy arrays are (out, in) as gguf expects."""
    rng = np.random.RandomState(SEED)
    n_vocab = bias.shape[0]
    n_kv = N_HEAD_KV * HEAD_DIM  # the same in the WIDE_HEADS variant
    t: dict[str, np.ndarray] = {}

    embd = _normal(rng, (n_vocab, N_EMBD), EMBD_STD)
    embd[:, 0] = BIAS_CHANNEL
    embd[:, 1] = 0.0
    newline_id = BYTE_BASE_ID + ord("\n")
    embd[newline_id, 1] = NEWLINE_CHANNEL
    t["token_embd.weight"] = embd

    for i in range(N_LAYER):
        p = f"blk.{i}."
        t[p + "attn_norm.weight"] = np.ones(N_EMBD, dtype=np.float32)
        wq = _normal(rng, (N_EMBD, N_EMBD), LAYER_STD)
        wk = _normal(rng, (n_kv, N_EMBD), LAYER_STD)
        wv = _normal(rng, (n_kv, N_EMBD), LAYER_STD)
        wo = _normal(rng, (N_EMBD, N_EMBD), LAYER_STD)
        t[p + "ffn_norm.weight"] = np.ones(N_EMBD, dtype=np.float32)
        wg = _normal(rng, (N_FF, N_EMBD), LAYER_STD)
        wu = _normal(rng, (N_FF, N_EMBD), LAYER_STD)
        wd = _normal(rng, (N_EMBD, N_FF), LAYER_STD)
        # Blocks neither read (input columns) nor write (output rows) the
        # reserved dims, so they reach the final norm untouched.
        for w in (wq, wk, wv, wg, wu):
            w[:, :N_RESERVED] = 0.0
        for w in (wo, wd):
            w[:N_RESERVED, :] = 0.0
        t[p + "attn_q.weight"] = wq
        t[p + "attn_k.weight"] = wk
        t[p + "attn_v.weight"] = wv
        t[p + "attn_output.weight"] = wo
        t[p + "ffn_gate.weight"] = wg
        t[p + "ffn_up.weight"] = wu
        t[p + "ffn_down.weight"] = wd

    t["output_norm.weight"] = np.ones(N_EMBD, dtype=np.float32)

    # After RMSNorm, dim 0 is ~sqrt(N_EMBD) * BIAS_CHANNEL / |x|; estimate it
    # from the embedding statistics so column 0 maps to the intended bias.
    rest_sq = (N_EMBD - 1) * EMBD_STD**2
    h0 = np.sqrt(N_EMBD) * BIAS_CHANNEL / np.sqrt(BIAS_CHANNEL**2 + rest_sq)
    out = _normal(rng, (n_vocab, N_EMBD), NOISE_STD)
    out[:, 0] = (bias / h0).astype(np.float32)
    out[:, 1] = 0.0
    # Context-independent EOS logit (plus the newline veto); <|im_start|>
    # likewise gets no noise that could ever lift it.
    out[IM_END_ID, 1:] = 0.0
    out[IM_START_ID, 1:] = 0.0
    h1 = np.sqrt(N_EMBD) * NEWLINE_CHANNEL / np.sqrt(BIAS_CHANNEL**2 + NEWLINE_CHANNEL**2 + rest_sq)
    out[IM_END_ID, 1] = EOS_AFTER_NEWLINE / h1
    t["output.weight"] = out

    # Store matrices as F16 and norms as F32 ("MOSTLY_F16"), like real GGUFs.
    return {k: (v.astype(np.float16) if v.ndim == 2 else v) for k, v in t.items()}


def write_tiny_model(
    path: pathlib.Path,
    heads: tuple[int, int] = (N_HEAD, N_HEAD_KV),
    chat_template: str = CHAT_TEMPLATE,
) -> pathlib.Path:
    """Write the tiny GGUF model to ``path``; same code gives identical bytes. ``heads``:
    (attention heads, KV heads)."""
    n_head, n_head_kv = heads
    path = pathlib.Path(path)
    tokens, scores, types, bias = _build_vocab()
    tensors = _build_tensors(bias)
    n_params = int(sum(v.size for v in tensors.values()))

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(MODEL_NAME)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_uint64("general.parameter_count", n_params)
    w.add_size_label(gguf.size_label(n_params, n_params, 0, 0))

    w.add_context_length(N_CTX_TRAIN)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_dimension_count(N_EMBD // n_head)
    w.add_rope_freq_base(ROPE_FREQ_BASE)
    w.add_layer_norm_rms_eps(RMS_EPS)
    w.add_vocab_size(len(tokens))

    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(UNK_ID)
    w.add_bos_token_id(BOS_ID)
    w.add_eos_token_id(IM_END_ID)
    w.add_add_bos_token(False)
    w.add_add_eos_token(False)
    w.add_chat_template(chat_template)

    for name, arr in tensors.items():
        w.add_tensor(name, arr)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def tiny_model_path(cache_dir: pathlib.Path, wide_heads: bool = False) -> pathlib.Path:
    """Return the cached model in ``cache_dir``, writing it atomically if missing
    (``wide_heads``: the WIDE_HEADS variant)."""
    cache_dir = pathlib.Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    heads = WIDE_HEADS if wide_heads else (N_HEAD, N_HEAD_KV)
    target = cache_dir / (FILE_NAME.replace(".gguf", "-heads32.gguf") if wide_heads else FILE_NAME)
    return cached_file(target, lambda tmp: write_tiny_model(tmp, heads))


def cached_file(target: pathlib.Path, write: Callable[[pathlib.Path], object]) -> pathlib.Path:
    """`target`, written by `write(path)` if missing. Written to a temp file in the same
    directory and renamed: concurrent test workers never see a half-written file, and the
    last rename wins with identical bytes."""
    if target.exists():
        return target
    fd, tmp_name = tempfile.mkstemp(prefix=".tiny-", suffix=".gguf.tmp", dir=target.parent)
    os.close(fd)
    tmp = pathlib.Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} OUT.gguf")
    out_path = write_tiny_model(pathlib.Path(sys.argv[1]))
    print(f"{out_path} ({out_path.stat().st_size} bytes)")
