"""Deterministic, resumable sample streams.

A stream is an endless sequence of (epoch, index) keys: each epoch a permutation of the dataset
drawn from (seed, epoch). A step takes the next `batch * world` keys; rank r takes its slice of
them. So a run's samples depend only on the global position, which makes resuming exact and a
2-rank run with batch b see the same samples as a 1-process run with batch 2b.

Random augmentation is seeded per item from (seed, epoch, index), inside whichever process loads
it, so it too is independent of worker count, rank and resume point.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from mslseg.runtime.errors import MslsegError

T = TypeVar("T")


def epoch_permutation(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(seed * 100003 + epoch)
    return torch.randperm(n, generator=g).tolist()


class StreamBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of (epoch, index) keys for one rank, starting at global sample `start`."""

    def __init__(self, n: int, batch: int, *, seed: int, start: int = 0, rank: int = 0, world: int = 1,
                 pick: Callable[[int], int] | None = None):
        self.n, self.batch, self.seed = n, batch, seed
        self.start, self.rank, self.world = start, rank, world
        self.pick = pick  # global position -> index (rare class sampling); None: epoch permutations

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.batch * self.world
        pos = self.start
        cache: dict[int, list[int]] = {}
        while True:
            keys = []
            for g in range(pos + self.rank * self.batch, pos + (self.rank + 1) * self.batch):
                if self.pick is not None:  # the position is the key's "epoch": each draw its own augmentation
                    keys.append((g, self.pick(g)))
                    continue
                epoch, offset = divmod(g, self.n)
                if epoch not in cache:
                    cache.clear()
                    cache[epoch] = epoch_permutation(self.n, self.seed, epoch)
                keys.append((epoch, cache[epoch][offset]))
            yield keys
            pos += step

    def __len__(self) -> int:  # endless; DataLoader only asks when iterated by length
        return 2**62


class SeededItems(Dataset):
    """Wraps a dataset so that item (epoch, index) is drawn with RNGs seeded from those keys.

    The global RNG states of the loading process are restored afterwards, so loading in the main
    process (workers=0) leaves the training RNG untouched.
    """

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        epoch, index = key
        item_seed = (self.seed * 1_000_003 + epoch * 7_919 + index) % (2**31)
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(item_seed)
            random.seed(item_seed)
            np.random.seed(item_seed)
            try:
                return self.dataset[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)


def stream_loader(dataset: Dataset, batch: int, *, seed: int, start: int, workers: int,
                  rank: int = 0, world: int = 1, pin_memory: bool = False,
                  pick: Callable[[int], int] | None = None) -> Iterator[dict[str, Any]]:
    """An endless iterator of collated batches for this rank, from global sample `start`; `pick`
    chooses the item of each global position instead of epoch permutations (rare class sampling)."""
    sampler = StreamBatchSampler(len(dataset), batch, seed=seed, start=start, rank=rank, world=world, pick=pick)
    loader = DataLoader(
        SeededItems(dataset, seed), batch_sampler=sampler, num_workers=workers,
        pin_memory=pin_memory, persistent_workers=workers > 0,
        prefetch_factor=2 if workers > 0 else None,
        # its own generator: a loader drawn from the global RNG when iteration starts would shift the
        # training RNG (dropout, drop-path) between a run and its resumed continuation
        generator=torch.Generator().manual_seed(seed),
    )
    return unwrap_worker_errors(loader)


def unwrap_worker_errors(batches: Iterable[T]) -> Iterator[T]:
    """Iterate a DataLoader, giving an MslsegError raised in a worker process back its own message.

    DataLoader re-raises a worker's exception as ``type(exc)("Caught ... Original Traceback ...")``:
    the worker's traceback inside the message, which the CLI would print as the error "line".
    """
    it = iter(batches)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except MslsegError as exc:
            text = str(exc)
            marker = f"{type(exc).__module__}.{type(exc).__qualname__}: "
            if text.startswith("Caught ") and marker in text:
                raise type(exc)(text.rsplit(marker, 1)[1].strip()) from None
            raise
        yield batch
