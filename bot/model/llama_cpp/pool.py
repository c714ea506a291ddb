"""The KV pool: channels' conversations resident in the context as llama.cpp sequences, and the
snapshots of channels evicted from it.

Recently active channels stay resident (more of them than there are slots, as sequence ids and
cells allow), so their next turn evaluates only what is new. A channel is evicted, least
recently used first and never while it generates, when its sequence id or its cells are
needed; its KV is then copied out into the snapshot LRU (bot.model.llama_cpp.kv_cache), from
which its next turn can restore it, and a new channel taking its sequence keeps the cells both
prompts share (the persona's system prompt). The channel to be evicted next is copied out in
spare time (`save_ahead`, after reading ahead), so the turn evicting it need not copy. While
replies generate, idle channels are parked the same way (`park`): llama.cpp attends over every
cell in use of a unified cache up to the highest one (masked, but computed, with flash attention
off), so idle cells slow every step of every reply; copying them out and back costs milliseconds.

The model thread owns all of this. `forget` and `state` are called from the event loop and
never wait for it: forgetting drops saved snapshots at once and leaves a mark that the model
thread honours before its next use of the pool, so a reset never waits for a generation.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import llama_cpp
import numpy as np
import numpy.typing as npt

from bot.model.llama_cpp.kv_cache import Rate, Snapshot, SnapshotCache, common_prefix, restore_wins
from bot.model.llama_cpp.projector import whole_images

# Shorter sequences are cheaper to evaluate again than to save.
MIN_SNAPSHOT_TOKENS = 32


@dataclass(eq=False, slots=True)
class Resident:
    """One channel's conversation held in the pool as a llama.cpp sequence."""

    seq: int
    key: str | None
    tokens: list[int] = field(default_factory=list)  # what the KV holds, position by position
    used: int = 0  # the pool's clock when it was last claimed or released
    busy: bool = False  # a generation is writing to it
    forgotten: bool = False  # forgotten while busy: dropped when its generation ends
    # Its length when llama.cpp failed to copy it out: not tried ahead again until it changes.
    uncopied_at: int = -1


class KvPool:
    """The resident sequences and the snapshots of evicted ones, within the context's sequence
    ids. Owned by the model thread, except `forget` and `state` (any thread)."""

    def __init__(
        self,
        ctx: llama_cpp.llama_context_p,
        memory: llama_cpp.llama_memory_t,
        n_seq_max: int,
        snapshots: SnapshotCache,
    ) -> None:
        self._ctx = ctx
        self._memory = memory
        self._free = list(range(n_seq_max - 1, -1, -1))  # pop() hands out 0 first
        self.residents: list[Resident] = []
        self.snapshots = snapshots
        self._clock = 0
        # Starting guesses; measured as the backend runs.
        self.prompt_rate = Rate(200.0)  # prompt tokens per second
        self.copy_rate = Rate(2e9)  # snapshot bytes per second
        self._bytes_per_token = 0.0  # of the last snapshot (0: none yet, so no estimate)
        # Shared with the event loop, under the lock: the snapshots, what `state` reports, and
        # the channels forgotten since the model thread last looked.
        self._lock = threading.Lock()
        self._view: dict[str | None, int] = {}
        self._forgotten: set[str] = set()
        self._forget_all = False

    # -- any thread ------------------------------------------------------------------------------

    def forget(self, key: str | None) -> None:
        """Drop a channel's saved state now (every channel's when None), and mark its resident
        sequence for the model thread to drop before it uses the pool again."""
        with self._lock:
            if key is None:
                self._forget_all = True
                self.snapshots.clear()
                self._view.clear()
            else:
                self._forgotten.add(key)
                self.snapshots.drop(key)
                self._view.pop(key, None)

    def state(self, key: str) -> str:
        with self._lock:
            resident = self._view.get(key, 0)
            snapshot = self.snapshots.peek(key)
        if resident:
            return f"warm ({resident:,} tokens resident)"
        if snapshot is not None:
            return f"warm ({len(snapshot.tokens):,} tokens saved, {snapshot.nbytes / 2**20:.1f} MB)"
        return "cold"

    def _marked(self, key: str | None) -> bool:
        """Forgotten since the model thread last looked (call with the lock held)."""
        return self._forget_all or (key is not None and key in self._forgotten)

    def publish(self, resident: Resident) -> None:
        """Show the sequence's token count to `state` (after it changed)."""
        with self._lock:
            if not self._marked(resident.key):
                self._view[resident.key] = len(resident.tokens)

    # -- the model thread ------------------------------------------------------------------------

    def honour_forgets(self) -> tuple[bool, frozenset[str]]:
        """Drop what was forgotten (a sequence that is generating when it ends); returns what
        that was (every channel, and which ones) for other holders of KV state."""
        with self._lock:
            forget_all, keys = self._forget_all, frozenset(self._forgotten)
            self._forget_all, self._forgotten = False, set()
        if not forget_all and not keys:
            return forget_all, keys
        for resident in list(self.residents):
            if forget_all or resident.key in keys:
                if resident.busy:
                    resident.forgotten = True
                else:
                    self.drop(resident)
        return forget_all, keys

    def claim(self, key: str | None, tokens: Sequence[int], cold: bool) -> tuple[Resident, int]:
        """A sequence for a generation of `key` with prompt `tokens`, holding the longest cached
        prefix of it (none when `cold`), and how many prompt tokens need no evaluation."""
        resident = self._idle_for(key, tokens) or self._fresh(key, tokens)
        resident.busy = True
        self._tick(resident)
        with self._lock:
            snapshot = self.snapshots.peek(key) if key is not None else None
        if snapshot is not None and not cold:
            saved = common_prefix(snapshot.tokens, tokens) - common_prefix(resident.tokens, tokens)
            if saved > 0 and restore_wins(snapshot.nbytes, saved, self.copy_rate, self.prompt_rate):
                self._restore(resident)
        if key is not None:
            with self._lock:
                self.snapshots.drop(key)  # the resident sequence is the fresher copy
        cached = 0 if cold else common_prefix(resident.tokens, tokens)
        # At least one token is evaluated so that the logits belong to this prompt; a picture
        # is evaluated whole, so a prefix ending inside one ends at its start.
        reuse = whole_images(tokens, min(cached, len(tokens) - 1))
        self.trim(resident, reuse)
        return resident, reuse

    def cuts(self, resident: Resident, start: int, end: int) -> Sequence[int]:
        return ()  # replies sharing the pool may split their prompts anywhere

    def release(self, resident: Resident) -> None:
        """Its generation ended: it stays resident for the channel's next turn, unless it was
        forgotten meanwhile. An older idle copy of the same channel goes."""
        resident.busy = False
        self._tick(resident)
        if resident.forgotten:
            self.drop(resident)
            return
        for other in list(self.residents):
            if other is not resident and other.key == resident.key and not other.busy:
                self.drop(other)
        self.publish(resident)

    def trim(self, resident: Resident, keep: int) -> None:
        """Keep the first `keep` tokens of a sequence. Cells past what it counts go too: a step
        that broke after llama_decode may have written some."""
        llama_cpp.llama_memory_seq_rm(self._memory, resident.seq, keep, -1)
        del resident.tokens[keep:]
        resident.uncopied_at = -1  # grown back to that length, it would hold other tokens
        self.publish(resident)

    def drop(self, resident: Resident, keep_cells: bool = False) -> None:
        """Remove a sequence from the pool (nothing saved); `keep_cells`: its id and the
        cells it still holds go to the caller, for another channel."""
        self.residents.remove(resident)
        if not keep_cells:
            llama_cpp.llama_memory_seq_rm(self._memory, resident.seq, -1, -1)
            resident.tokens.clear()
            self._free.append(resident.seq)
        with self._lock:
            if self._view.get(resident.key) is not None and not any(
                r.key == resident.key for r in self.residents
            ):
                del self._view[resident.key]

    def park(self, allowance: int, keep: Collection[str | None] = ()) -> int:
        """While replies generate: save idle sequences as snapshots and drop them, least recently
        used first, until the idle ones hold at most `allowance` cells. `keep`: channels about to
        be claimed. A sequence is parked only into the snapshot budget's free room: pushing
        other channels' snapshots out would trade their warm state for speed (with a big model
        the budget may hold one conversation, the pool several). Returns how many were parked."""
        idle = sorted(
            (r for r in self.residents if not r.busy and r.key not in keep), key=lambda r: r.used
        )
        held = sum(len(r.tokens) for r in idle)
        parked = 0
        for victim in idle:
            if held <= allowance:
                break
            if len(victim.tokens) >= MIN_SNAPSHOT_TOKENS and not self._has_room(victim):
                continue  # it stays, costing attention, rather than lose another's state
            held -= len(victim.tokens)
            self._stash(victim)
            self.drop(victim)
            parked += 1
        return parked

    def _has_room(self, resident: Resident) -> bool:
        with self._lock:
            room = self.snapshots.budget_bytes - self.snapshots.total_bytes
        # Asked every step while a channel does not fit: the estimate from the last snapshot
        # answers "no" without llama.cpp walking the sequence's cells.
        if len(resident.tokens) * self._bytes_per_token > room:
            return False
        return llama_cpp.llama_state_seq_get_size(self._ctx, resident.seq) <= room

    def save_ahead(self) -> None:
        """While time is spare: copy out the channel to be evicted next (it stays resident), so
        that the turn evicting it does not wait for the copy. Only into the snapshot budget's
        free room, as `park`."""
        victim = self._due_copy()
        if victim is not None:
            self._stash(victim)

    def save_due(self) -> bool:
        """Whether `save_ahead` would copy a channel now: the next to be evicted changes when
        others start generating (asked between steps, so it stays cheap)."""
        return self._due_copy() is not None

    def _due_copy(self) -> Resident | None:
        """The channel `save_ahead` would copy out now, if any."""
        if self.snapshots.budget_bytes <= 0:  # snapshots off: nothing to save into
            return None
        victim = None if self._free else self._least_used_idle()
        if victim is None or victim.key is None or len(victim.tokens) < MIN_SNAPSHOT_TOKENS:
            return None
        if victim.uncopied_at == len(victim.tokens):
            return None
        if self._saved(victim) or not self._has_room(victim):
            return None
        return victim

    def evict(self) -> bool:
        """Make room: save the least recently used idle sequence as a snapshot and drop it.
        False when every resident sequence is generating."""
        victim = self._least_used_idle()
        if victim is None:
            return False
        self._stash(victim)
        self.drop(victim)
        return True

    # -- inside ------------------------------------------------------------------------------------

    def _idle_for(self, key: str | None, tokens: Sequence[int]) -> Resident | None:
        mine = [r for r in self.residents if r.key == key and not r.busy and not r.forgotten]
        return max(mine, key=lambda r: common_prefix(r.tokens, tokens), default=None)

    def _fresh(self, key: str | None, tokens: Sequence[int]) -> Resident:
        """A sequence for a channel with none resident: a free one, else the least recently
        used idle channel's, saved first as an eviction saves it, keeping the cells it shares
        with `tokens` (a persona's system prompt), as llama-server keeps a slot's prefix."""
        if not self._free:
            victim = self._least_used_idle()
            if victim is None:
                raise RuntimeError("every sequence of the KV pool is generating")
            self._stash(victim)
            shared = common_prefix(victim.tokens, tokens)
            self.trim(victim, shared)
            self.drop(victim, keep_cells=shared > 0)
            if shared:
                resident = Resident(victim.seq, key, victim.tokens)
                victim.tokens = []
                self.residents.append(resident)
                return resident
        resident = Resident(self._free.pop(), key)
        self.residents.append(resident)
        return resident

    def _least_used_idle(self) -> Resident | None:
        return min((r for r in self.residents if not r.busy), key=lambda r: r.used, default=None)

    def _tick(self, resident: Resident) -> None:
        self._clock += 1
        resident.used = self._clock

    def _saved(self, resident: Resident) -> bool:
        """Its snapshot holds what it holds (saved ahead, and not changed since)."""
        with self._lock:
            snapshot = self.snapshots.peek(resident.key) if resident.key is not None else None
        return snapshot is not None and snapshot.tokens == tuple(resident.tokens)

    def _stash(self, resident: Resident) -> None:
        key = resident.key
        if key is None or len(resident.tokens) < MIN_SNAPSHOT_TOKENS or self._saved(resident):
            return
        with self._lock:
            if self._marked(key) or self.snapshots.budget_bytes <= 0:
                return
        started = time.perf_counter()
        size = llama_cpp.llama_state_seq_get_size(self._ctx, resident.seq)
        # Written by llama.cpp straight into the array kept: no zeroing, no second copy (on the
        # critical path of the turn that evicts it).
        data = np.empty(size, np.uint8)
        written = llama_cpp.llama_state_seq_get_data(self._ctx, _bytes(data), size, resident.seq)
        if not written:
            resident.uncopied_at = len(resident.tokens)
            return
        kept = data if written == size else data[:written].copy()  # counted as it is held
        snapshot = Snapshot(tuple(resident.tokens), kept)
        self._bytes_per_token = written / len(resident.tokens)
        self.copy_rate.add(written, time.perf_counter() - started)
        with self._lock:
            if not self._marked(key):  # not forgotten while it was being copied
                self.snapshots.put(key, snapshot)

    def _restore(self, resident: Resident) -> None:
        """Replace the sequence's KV with the channel's snapshot, making room if needed."""
        assert resident.key is not None
        with self._lock:
            snapshot = self.snapshots.take(resident.key)
        if snapshot is None:
            return
        self.trim(resident, 0)
        started = time.perf_counter()
        while not llama_cpp.llama_state_seq_set_data(
            self._ctx, _bytes(snapshot.data), snapshot.nbytes, resident.seq
        ):
            llama_cpp.llama_memory_seq_rm(self._memory, resident.seq, -1, -1)
            if not self.evict():  # no room, and nothing left to make room with
                return
        resident.tokens[:] = snapshot.tokens
        self.copy_rate.add(snapshot.nbytes, time.perf_counter() - started)


def _bytes(data: npt.NDArray[np.uint8]) -> ctypes._Pointer[ctypes.c_uint8]:
    """The array's memory as llama.cpp's state functions take it (no copy)."""
    return data.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8))
