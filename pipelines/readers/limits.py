"""Size caps every reader checks *before* it allocates, and a per-file memory guard.

A landing zone of a few megabytes can declare gigabytes: a DICOM with billions of frames, a
compressed or deflated stream that inflates a thousandfold, a WFDB header declaring 10^9
samples. Readers compare what a file declares with its size on disk and with these caps and
raise :class:`~pipelines.readers.errors.InputError` (``size_limit_exceeded``,
``header_mismatch``) instead of allocating. As a backstop, :func:`memory_guard` lowers the
worker's address-space limit while one file is decoded, so an allocation nobody foresaw
fails with ``MemoryError`` (quarantined as ``memory_limit``) instead of the kernel killing
the worker and the batch with it.
"""

from __future__ import annotations

import logging
import resource
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

from pipelines.readers.errors import InputError

logger = logging.getLogger(__name__)

_MIB = 1 << 20


@dataclass(frozen=True)
class ReadLimits:
    """Caps on what one input may make a reader allocate.

    Attributes:
        max_file_bytes: largest file a reader loads whole (DICOM files are parsed in memory).
        max_decoded_bytes: largest decoded pixel memory of one image: the whole array
            (frames x rows x columns x samples x bytes per sample) for a full decode, one such
            frame plus the 112x112 output clip for a streamed one (ingestion).
        max_frames: most frames one cine loop may declare.
        max_waveform_samples: most samples (all channels) one ECG record may declare.
        max_inflated_bytes: largest inflated size of a deflated DICOM data set.
        max_header_bytes: largest WFDB header file.
        task_memory_bytes: address space a worker may add while decoding one file (0: no
            guard).
    """

    max_file_bytes: int = 1024 * _MIB
    max_decoded_bytes: int = 256 * _MIB
    max_frames: int = 10_000
    max_waveform_samples: int = 50_000_000
    max_inflated_bytes: int = 256 * _MIB
    max_header_bytes: int = 1 * _MIB
    task_memory_bytes: int = 2048 * _MIB


DEFAULT_LIMITS = ReadLimits()


def check_size(what: str, declared: int, cap: int, uri: str) -> None:
    """Raise ``size_limit_exceeded`` when ``declared`` passes ``cap`` (numbers only in detail)."""
    if declared > cap:
        raise InputError("size_limit_exceeded", f"{what} declares {declared:,} > cap {cap:,}", uri)


def inflated_size(stream: BinaryIO, cap: int, uri: str) -> int:
    """Inflate a raw-deflate stream chunk by chunk, refusing more than ``cap`` bytes out.

    Returns:
        The inflated size (nothing is kept).

    Raises:
        InputError: ``size_limit_exceeded`` past the cap, ``decode_failed`` for a corrupt stream.
    """
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    try:
        while chunk := stream.read(1 << 16):
            data = inflater.decompress(chunk, 1 << 20)
            total += len(data)
            while inflater.unconsumed_tail:
                data = inflater.decompress(inflater.unconsumed_tail, 1 << 20)
                total += len(data)
                if total > cap:
                    break
            if total > cap:
                check_size("deflated data set", total, cap, uri)
        total += len(inflater.flush())
    except zlib.error as exc:
        raise InputError("decode_failed", "corrupt deflate stream", uri) from exc
    check_size("deflated data set", total, cap, uri)
    return total


def _address_space() -> int:
    """This process's current virtual size in bytes (0 when /proc is unavailable)."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * resource.getpagesize()


@contextmanager
def memory_guard(budget_bytes: int) -> Iterator[None]:
    """Let the process grow by at most ``budget_bytes`` of address space inside the block.

    Allocations past it raise ``MemoryError`` (numpy, Python, OpenCV's allocator) which
    readers turn into the ``memory_limit`` quarantine reason. The previous limit is restored
    afterwards (lowering and re-raising a soft limit needs no privilege).
    """
    current = _address_space()
    if budget_bytes <= 0 or current == 0:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    wanted = current + budget_bytes
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft <= wanted:
        yield  # an outer, tighter limit already applies
        return
    resource.setrlimit(resource.RLIMIT_AS, (wanted, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
