"""Reading a blob while its download writes it (bundler.images.ArrivingBlob)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from pathlib import Path

import pytest

from kubeferry.bundler.images import ArrivingBlob
from kubeferry.errors import OperationError
from kubeferry.oci.store import BlobStore, digest_of

DATA = bytes(range(256)) * 4096  # 1 MiB


def download(store: BlobStore, digest: str, fetch: Future[int], arrived: threading.Condition,
             pieces: list[bytes], fail: Exception | None = None) -> threading.Thread:
    """A download as the client makes it: appends to the partial file, then commits it."""

    def run() -> None:
        partial = store.partial_path(digest)
        for piece in pieces:
            if piece == b"":  # start over, as after a server that ignored the Range
                partial.write_bytes(b"")
                continue
            with open(partial, "ab") as out:
                out.write(piece)
            with arrived:
                arrived.notify_all()
            time.sleep(0.01)
        if fail is not None:
            fetch.set_exception(fail)
            return
        store.commit_partial(digest, actual_digest=digest)
        fetch.set_result(len(DATA))

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def read_all(blob: ArrivingBlob, size: int) -> bytes:
    with blob:
        return blob.read(size)


@pytest.mark.parametrize("pieces", [
    [DATA[i:i + 100_000] for i in range(0, len(DATA), 100_000)],
    [DATA[:300_000], b"", DATA],  # the partial file started over mid-read
], ids=["appended", "started-over"])
def test_the_reader_gets_every_byte_while_they_arrive(tmp_path: Path, pieces: list[bytes]) -> None:
    store = BlobStore(tmp_path)
    digest = digest_of(DATA)
    fetch: Future[int] = Future()
    arrived = threading.Condition()
    writer = download(store, digest, fetch, arrived, pieces)
    try:
        assert read_all(ArrivingBlob(store, digest, fetch, arrived), len(DATA) + 1) == DATA
    finally:
        writer.join(timeout=30)
    assert store.has(digest)


def test_a_download_that_fails_fails_the_reader(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    digest = digest_of(DATA)
    fetch: Future[int] = Future()
    arrived = threading.Condition()
    writer = download(store, digest, fetch, arrived, [DATA[:1000]], fail=OperationError("blob: refused"))
    try:
        with pytest.raises(OperationError, match="refused"):
            read_all(ArrivingBlob(store, digest, fetch, arrived), len(DATA))
    finally:
        writer.join(timeout=30)
