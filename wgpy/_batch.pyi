"""Types of the C batch accelerator (wgpy/_batch.c); the contract is wgpy.batch's twins."""

from collections.abc import Iterable, Sequence

from wgpy.batch import (
    Buffer,
    Coalesced,
    OpenedBatch,
    OpenedRun,
    ParsedPrefixes,
    SealedRun,
    SealedSuper,
)
from wgpy.replay import ReplayWindow

OK: int
SHORT: int
BAD_TAG: int
FOREIGN: int
OPENSSL_VERSION: str

def seal_run(
    key: Buffer,
    receiver: int,
    counter: int,
    packets: Sequence[Buffer],
    mtu: int,
    limits: Sequence[int] | None = None,
) -> SealedRun: ...
def open_batch(
    key: Buffer,
    datagrams: Sequence[Buffer],
    receiver: int = -1,
    limit: int = 2**64 - 1,
) -> OpenedBatch: ...
def open_run(
    key: Buffer,
    datagrams: Sequence[Buffer],
    start: int,
    receiver: int,
    limit: int,
    window: ReplayWindow,
) -> OpenedRun: ...
def seal_super(
    key: Buffer, receiver: int, counter: int, frame: Buffer, mtu: int, limit: int
) -> SealedSuper | None: ...
def coalesce(packets: Iterable[bytes], *, udp: bool = False) -> Coalesced: ...
def parse_prefixes(run: Buffer, start: int) -> ParsedPrefixes: ...
