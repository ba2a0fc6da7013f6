"""Every read and write of a neuron's bucket: peers' uploads, records, peer lists, checkpoints, hparams.

Reads return a `Read` (template.protocol.reads) whose status says what happened: ok, not_found,
no_commitment, invalid (with the reason), too_large, timeout, denied or error. Nothing here raises
for a peer's misbehaviour; own writes raise `S3Error` after the client's retries.

Where a peer's bucket is comes from its on-chain commitment; this module takes the commitments as a
callable (hotkey -> committed string) so it never talks to the chain itself. Once the run's hparams
are known (`configure`), a commitment whose endpoint is not an approved provider counts as none
(its Last-Modified could be anything), and every read is bounded by the run's fetch budget
(storage.bounded): a slow or silent peer ends as TIMEOUT, and the reads of one window run at once.
"""

from __future__ import annotations

import hashlib
import io
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol, TypeVar

import torch
from bittensor_wallet import Keypair
from loguru import logger

from storage.bounded import FetchBudget, Identity, deadline
from storage.credentials import BucketAccess
from storage.s3 import GetResult, IdentityClient, ObjectInfo, S3Client, S3Error, Status
from storage.spool import UploadSpool
from template.protocol import layout
from template.protocol.artifacts import (
    ArtifactError,
    TensorArtifact,
    header_length,
    read_json_artifact,
    read_tensor_artifact,
    read_tensor_manifest,
    write_json_artifact,
)
from template.protocol.config import PROTOCOL_VERSION, HParams
from template.protocol.endpoints import endpoint_approved
from template.protocol.peer_lists import parse_peer_list
from template.protocol.reads import Read, ReadStatus
from template.protocol.records import AggregationRecord, RecordEntry
from template.protocol.sealing import (
    KEY_MISSING,
    LATE_KEY,
    REVEAL_MAX_BYTES,
    SealError,
    is_sealed,
    open_sealed,
    parse_reveal,
)
from template.protocol.sparseloco import CodecError, CodecParams, decompress
from template.protocol.uploads import Payload, Upload
from template.protocol.verdicts import CheckpointVerdict, Verdict
from template.protocol.windows import on_time

PEER_READ_ATTEMPTS = 6
OWN_WRITE_ATTEMPTS = 8
RECORD_MAX_BYTES = 4 << 20
PEERS_MAX_BYTES = 1 << 20
HPARAMS_MAX_BYTES = 1 << 20
T = TypeVar("T")

FETCH_WORKERS = 16  # reads of one window in flight at once (each bounded by the fetch budget)

_STATUS = {Status.OK: ReadStatus.OK, Status.NOT_FOUND: ReadStatus.NOT_FOUND, Status.TOO_LARGE: ReadStatus.TOO_LARGE,
           Status.DENIED: ReadStatus.DENIED, Status.TIMEOUT: ReadStatus.TIMEOUT, Status.ERROR: ReadStatus.ERROR}


def read_of(res: GetResult) -> Read[bytes]:
    """An S3 GetResult as a Read of bytes; a timed-out transfer is TIMEOUT, not a generic error."""
    if res.status is Status.OK and res.data is not None:
        return Read.success(res.data, res.info.last_modified if res.info else None)
    status = _STATUS[res.status]
    if status is ReadStatus.ERROR and res.error and "timeout" in res.error.lower():
        status = ReadStatus.TIMEOUT
    if status is ReadStatus.ERROR and res.error and "sha256 mismatch" in res.error:
        status = ReadStatus.INVALID
    return Read.failure(status, res.error or "")


class PeerReader(Protocol):
    """What `PeerBuckets` reads a peer's bucket with (an `IdentityClient`; unit tests pass an in-memory store)."""

    def get(self, bucket: str, key: str, *, max_bytes: int | None = None, sha256: str | None = None,
            budget: FetchBudget | None = None) -> GetResult:
        ...

    def list(self, bucket: str, prefix: str = "", *, page_size: int | None = None) -> list[ObjectInfo]:
        ...

    def get_range(self, bucket: str, key: str, offset: int, length: int, sink: BinaryIO, *,
                  budget: FetchBudget | None = None) -> GetResult:
        ...


_SHARED_LOCK = threading.Lock()
_SHARED: list[S3Client] = []


def shared_peer_client() -> S3Client:
    """The one S3 client every peer read goes through, signed per read with that peer's keys."""
    with _SHARED_LOCK:
        if not _SHARED:
            _SHARED.append(S3Client.for_identities(FetchBudget(), max_attempts=PEER_READ_ATTEMPTS))
        return _SHARED[0]


def peer_client(acc: BucketAccess) -> PeerReader:
    """Reads of a peer's bucket with the read keys it published: every request over a watched connection
    (storage.bounded), each read within the budget `PeerBuckets.get` sets, all peers over one client."""
    return IdentityClient(shared_peer_client(), Identity(acc.endpoint, acc.access_key_id, acc.secret_access_key,
                                                         acc.region))


@dataclass
class PeerBuckets:
    """Hotkey -> read access to its bucket, from on-chain commitments; unusable commitments are skipped.

    `commitments` returns hotkey -> committed string (the runtime passes the chain's); `refresh()`
    re-reads it. One reader per distinct (endpoint, keys), kept across refreshes; `client_factory`
    makes it (unit tests pass an in-memory store with S3Client's methods). `approved` (endpoint
    patterns, template.protocol.endpoints) is None until `configure` sets the run's: only the
    subnet owner's bucket is read before that, to get the hparams.
    """

    commitments: Callable[[], dict[str, str]]
    on_secret: Callable[[str], None] = lambda _secret: None  # e.g. keep read secrets out of the logs
    access: dict[str, BucketAccess] = field(default_factory=dict)
    client_factory: Callable[[BucketAccess], PeerReader] = peer_client
    budget: FetchBudget = field(default_factory=FetchBudget)
    checkpoint_budget: FetchBudget = field(default_factory=lambda: FetchBudget(total_s=600.0))
    approved: tuple[str, ...] | None = None
    refused: dict[str, str] = field(default_factory=dict)  # hotkey -> why its commitment is not usable
    _clients: dict[tuple[str, str, str], PeerReader] = field(default_factory=dict)

    def configure(self, hp: HParams) -> None:
        """Apply the run's storage rules (approved endpoints, fetch budgets) and re-read the commitments."""
        self.approved = hp.approved_storage_endpoints
        self.budget = FetchBudget(total_s=hp.fetch_timeout_s, min_bytes_per_s=hp.fetch_min_bytes_per_s)
        self.checkpoint_budget = FetchBudget(total_s=hp.checkpoint_fetch_timeout_s,
                                             min_bytes_per_s=hp.fetch_min_bytes_per_s)
        self.refresh()

    def refresh(self) -> None:
        fresh: dict[str, BucketAccess] = {}
        refused: dict[str, str] = {}
        for hotkey, raw in self.commitments().items():
            try:
                acc = BucketAccess.decode(raw)
            except ValueError as e:
                refused[hotkey] = f"unusable commitment: {e}"
                continue
            if self.approved is not None and not endpoint_approved(acc.endpoint, self.approved):
                refused[hotkey] = f"endpoint {acc.endpoint} is not an approved storage provider"
                continue
            fresh[hotkey] = acc
        for hotkey, why in refused.items():
            if self.refused.get(hotkey) != why:
                logger.debug(f"ignoring commitment of {hotkey[:10]}: {why}")
        self.access, self.refused = fresh, refused

    def reader(self, hotkey: str) -> tuple[PeerReader, str] | None:
        """(client with the peer's read keys, bucket), or None when the hotkey committed no usable access."""
        acc = self.access.get(hotkey)
        if acc is None:
            return None
        ident = (acc.endpoint, acc.access_key_id, acc.secret_access_key)
        if ident not in self._clients:
            self.on_secret(acc.secret_access_key)
            self._clients[ident] = self.client_factory(acc)
        return self._clients[ident], acc.bucket

    def get(self, hotkey: str, key: str, max_bytes: int, budget: FetchBudget | None = None) -> Read[bytes]:
        """The bytes of `key` in the peer's bucket (at most `max_bytes`), within `budget` (default: the run's)."""
        found = self.reader(hotkey)
        if found is None:
            why = self.refused.get(hotkey, "published no bucket access")
            return Read.failure(ReadStatus.NO_COMMITMENT, f"{hotkey[:10]}: {why}")
        client, bucket = found
        budget = budget or self.budget
        with deadline(time.monotonic() + budget.total_s, budget):
            return read_of(client.get(bucket, key, max_bytes=max_bytes))

    def get_range(self, hotkey: str, key: str, offset: int, length: int) -> Read[bytes]:
        """Bytes [offset, offset + length) of `key` in the peer's bucket, within the run's fetch budget (a
        shorter object is ERROR)."""
        found = self.reader(hotkey)
        if found is None:
            why = self.refused.get(hotkey, "published no bucket access")
            return Read.failure(ReadStatus.NO_COMMITMENT, f"{hotkey[:10]}: {why}")
        client, bucket = found
        sink = io.BytesIO()
        with deadline(time.monotonic() + self.budget.total_s, self.budget):
            res = client.get_range(bucket, key, offset, length, sink)
        if res.status is not Status.OK:
            return Read.failure(_STATUS.get(res.status, ReadStatus.ERROR), res.error or "")
        return Read.success(sink.getvalue())

    def get_all(self, requests: list[tuple[str, str]], max_bytes: int) -> list[Read[bytes]]:
        """`get` of many (hotkey, key) at once (up to FETCH_WORKERS in flight), in the order given.

        All of them end within one `budget.total_s` from now, however many there are: a slow peer
        costs its own read, never the window."""
        return self.get_each(requests, max_bytes, lambda _index, read: read)

    def get_each(self, requests: list[tuple[str, str]], max_bytes: int,
                 then: Callable[[int, Read[bytes]], T]) -> list[T]:
        """`get_all`, each read handed to `then(index, read)` in the worker that made it, as soon as it is in
        (e.g. to write its bytes to disk, so the window never holds every peer's bytes at once)."""
        if not requests:
            return []
        end = time.monotonic() + self.budget.total_s

        def one(index: int) -> T:
            with deadline(end):
                read = self.get(requests[index][0], requests[index][1], max_bytes)
            return then(index, read)

        with ThreadPoolExecutor(max_workers=min(FETCH_WORKERS, len(requests)), thread_name_prefix="peerget") as pool:
            return list(pool.map(one, range(len(requests))))

    def list_windows(self, hotkey: str, prefix: str) -> list[int]:
        """Windows of the keys under `prefix` in the peer's bucket ([] without a commitment)."""
        found = self.reader(hotkey)
        if found is None:
            return []
        client, bucket = found
        windows = [layout.parse_window(o.key) for o in client.list(bucket, prefix)]
        return sorted({w for w in windows if w is not None})


@dataclass(frozen=True)
class OwnBucket:
    """This neuron's bucket: write keys stay here, read keys (`access`) are published on chain."""

    access: BucketAccess
    client: S3Client

    def put(self, key: str, data: bytes) -> None:
        self.client.put(self.access.bucket, key, data)

    def put_update(self, window: int, data: bytes) -> str:
        """A miner's signed gradient artifact for `window`; returns its key."""
        key = layout.gradient_key(window)
        self.put(key, data)
        return key

    def put_input(self, window: int, data: bytes) -> str:
        """The lead's mirror of an update it aggregates into `window`, content-addressed by the sha256 of
        `data` (the unsealed artifact file); returns its key (`layout.input_key`), which the record names."""
        key = layout.input_key(window, hashlib.sha256(data).hexdigest())
        self.put(key, data)
        return key

    def put_reveal(self, window: int, data: bytes) -> None:
        """The key that opens this miner's sealed update of `window` (`sealing.reveal_bytes`), after the deadline."""
        self.put(layout.key_reveal_key(window), data)

    def put_record(self, window: int, record: AggregationRecord, keypair: Keypair) -> None:
        self.put(layout.record_key(window),
                 write_json_artifact(record.to_body(), kind="record", window=window, keypair=keypair))

    def put_peer_list(self, window: int, peer_uids: list[int], keypair: Keypair) -> None:
        self.put(layout.peers_key(window),
                 write_json_artifact({"window": window, "peers": peer_uids}, kind="peers", window=window,
                                     keypair=keypair))

    def put_verdict(self, verdict: Verdict, keypair: Keypair) -> None:
        """This validator's signed verdict on the lead's record of `verdict.window`."""
        self.put(layout.verdict_key(verdict.window),
                 write_json_artifact(verdict.to_body(), kind="verdict", window=verdict.window, keypair=keypair))

    def put_checkpoint_verdict(self, verdict: CheckpointVerdict, keypair: Keypair) -> None:
        """This validator's signed verdict on the lead's checkpoint of `verdict.window`."""
        self.put(layout.checkpoint_verdict_key(verdict.window),
                 write_json_artifact(verdict.to_body(), kind="verdict", window=verdict.window, keypair=keypair))

    def put_checkpoint(self, window: int, data: bytes) -> None:
        self.put(layout.checkpoint_key(window), data)

    def prune(self, now_window: int, retention_windows: int) -> list[str]:
        """Delete this bucket's protocol objects that `stale_keys` names; returns the keys deleted.

        A failed delete is logged and left for the next call (nothing else depends on it)."""
        if retention_windows <= 0:
            return []
        try:
            keys = [o.key for o in self.client.list(self.access.bucket, f"v{PROTOCOL_VERSION}/")]
        except S3Error as e:
            logger.warning(f"retention: cannot list own bucket: {e}")
            return []
        deleted = []
        for key in stale_keys(keys, now_window, retention_windows):
            try:
                self.client.delete(self.access.bucket, key)
                deleted.append(key)
            except S3Error as e:
                logger.warning(f"retention: {e}; trying again next window")
        if deleted:
            logger.debug(f"retention: deleted {len(deleted)} objects older than window {now_window - retention_windows}")
        return deleted


def stale_keys(keys: list[str], now_window: int, retention_windows: int) -> list[str]:
    """Keys (gradients, records, peer lists, checkpoints) a node may delete at `now_window`.

    An object of window w goes once w < now_window - retention_windows, except what a node joining
    now still needs: the newest checkpoint, and every object from its window on (the records to
    replay after it, and the updates they name). Keys of no window (hparams, dataset) are kept.
    `retention_windows` 0 keeps everything.
    """
    if retention_windows <= 0:
        return []
    windows = {key: layout.parse_window(key) for key in keys}
    checkpoints = [w for key, w in windows.items() if w is not None and key.startswith(layout.checkpoint_prefix())
                   and w <= now_window]
    keep_from = now_window - retention_windows
    if checkpoints:
        keep_from = min(keep_from, max(checkpoints))
    return sorted(key for key, w in windows.items() if w is not None and w < keep_from)


# -- typed reads of the protocol's objects -------------------------------------------------------


def _fetch_signed(peers: PeerBuckets, signer: str, key: str, *, kind: str, window: int, max_bytes: int, what: str,
                  parse: Callable[[Any], T]) -> Read[T]:
    """One signed JSON object of the protocol: read (at most `max_bytes`), its signature, kind and window checked,
    its body parsed (`parse` raises ValueError naming the fault); INVALID says `what` was wrong."""
    raw = peers.get(signer, key, max_bytes=max_bytes)
    if not raw.ok or raw.value is None:
        return Read.failure(raw.status, raw.reason)
    try:
        art = read_json_artifact(raw.value, kind=kind, signer_ss58=signer, window=window)
        return Read.success(parse(art.body), raw.last_modified)
    except (ArtifactError, ValueError) as e:
        return Read.failure(ReadStatus.INVALID, f"{what} of window {window}: {e}")


def fetch_record(peers: PeerBuckets, lead_hotkey: str, window: int) -> Read[AggregationRecord]:
    """The lead's signed aggregation record of `window`."""
    return _fetch_signed(peers, lead_hotkey, layout.record_key(window), kind="record", window=window,
                         max_bytes=RECORD_MAX_BYTES, what="record", parse=AggregationRecord.from_body)


def fetch_peer_list(peers: PeerBuckets, lead_hotkey: str, window: int) -> Read[list[int]]:
    """The lead's signed peer list in force for `window`."""
    return _fetch_signed(peers, lead_hotkey, layout.peers_key(window), kind="peers", window=window,
                         max_bytes=PEERS_MAX_BYTES, what="peer list",
                         parse=lambda body: parse_peer_list(body, window=window))


def fetch_verdict(peers: PeerBuckets, validator_hotkey: str, window: int) -> Read[Verdict]:
    """A validator's signed verdict on the lead's record of `window`."""
    return _fetch_signed(peers, validator_hotkey, layout.verdict_key(window), kind="verdict", window=window,
                         max_bytes=PEERS_MAX_BYTES, what="verdict",
                         parse=lambda body: Verdict.from_body(body, window=window))


def fetch_checkpoint_verdict(peers: PeerBuckets, validator_hotkey: str, window: int) -> Read[CheckpointVerdict]:
    """A validator's signed verdict on the lead's checkpoint of `window`."""
    return _fetch_signed(peers, validator_hotkey, layout.checkpoint_verdict_key(window), kind="verdict",
                         window=window, max_bytes=PEERS_MAX_BYTES, what="checkpoint verdict",
                         parse=lambda body: CheckpointVerdict.from_body(body, window=window))


def open_sealed_reads(peers: PeerBuckets, hotkeys: list[str], window: int, reads: list[Read[bytes]],
                      max_bytes: int, reveal_by: float | None) -> list[tuple[Read[bytes], str | None]]:
    """Each read of an upload of `window` (by `hotkeys[i]`), a sealed one opened with the key its author revealed.

    (read of the plaintext artifact with the sealed object's LastModified, None), or for a sealed upload that
    cannot be opened (read as fetched, reason): `key_missing`, `late_key` (the key's LastModified after
    `reveal_by`; None: not checked), `bad_key`, or the sealed artifact's own ArtifactError code. Unsealed
    uploads pass through. The keys are fetched at once, within one fetch budget."""
    out: list[tuple[Read[bytes], str | None]] = [(read, None) for read in reads]
    sealed = [i for i, read in enumerate(reads) if read.ok and read.value is not None
              and is_sealed(read.value, max_bytes=max_bytes)]
    keys = fetch_reveals(peers, [hotkeys[i] for i in sealed], window)
    for i, key_read in zip(sealed, keys, strict=True):
        out[i] = open_with_reveal(reads[i], key_read, hotkeys[i], window, max_bytes, reveal_by)
    return out


def fetch_reveals(peers: PeerBuckets, hotkeys: list[str], window: int) -> list[Read[bytes]]:
    """The key reveal of `window` of each hotkey, fetched at once within one fetch budget."""
    return peers.get_all([(hotkey, layout.key_reveal_key(window)) for hotkey in hotkeys], REVEAL_MAX_BYTES)


def open_with_reveal(read: Read[bytes], key_read: Read[bytes], hotkey: str, window: int, max_bytes: int,
                     reveal_by: float | None) -> tuple[Read[bytes], str | None]:
    """One sealed upload's read opened with its author's key reveal (`open_sealed_reads` says what comes out)."""
    if not key_read.ok or key_read.value is None:
        return read, KEY_MISSING
    if reveal_by is not None and not on_time(key_read.last_modified, reveal_by):
        return read, LATE_KEY
    try:
        key = parse_reveal(key_read.value, window=window)
        plain = open_sealed(read.value or b"", key, hotkey=hotkey, window=window, max_bytes=max_bytes)
    except SealError as e:
        return read, e.code
    return Read.success(plain, read.last_modified), None


def fetch_uploads(peers: PeerBuckets, hotkeys: dict[int, str], window: int, max_bytes: int,
                  reveal_by: float | None = None, spool: UploadSpool | None = None) -> list[Upload]:
    """The gradient uploads of `window` of the given uids (uid -> hotkey), one `Upload` each, by uid.

    Sealed uploads are opened (`open_sealed_reads`): `data` is then the plaintext artifact, and a key that is
    missing, later than `reveal_by` or wrong sets `Upload.rejected`. With a `spool`, each upload's bytes go to
    disk as its read completes (a sealed one's replaced by its plaintext once opened) and `data` is None:
    `spool.load(upload)` reads them back."""
    if spool is not None:
        return fetch_uploads_spooled(peers, hotkeys, window, max_bytes, reveal_by, spool)
    key = layout.gradient_key(window)
    items = sorted(hotkeys.items())
    reads = peers.get_all([(hotkey, key) for _, hotkey in items], max_bytes)
    opened = open_sealed_reads(peers, [hotkey for _, hotkey in items], window, reads, max_bytes, reveal_by)
    return [Upload(uid=uid, hotkey=hotkey, key=key, data=read.value, last_modified=read.last_modified,
                   status=read.status, rejected=why)
            for (uid, hotkey), (read, why) in zip(items, opened, strict=True)]


def fetch_uploads_spooled(peers: PeerBuckets, hotkeys: dict[int, str], window: int, max_bytes: int,
                          reveal_by: float | None, spool: UploadSpool) -> list[Upload]:
    """`fetch_uploads` into `spool`: the same reads, budgets and verdicts, one upload's bytes in memory at a time."""
    key = layout.gradient_key(window)
    items = sorted(hotkeys.items())
    spool.clear()

    def to_disk(index: int, read: Read[bytes]) -> Read[bool]:
        """The read with its bytes written to the spool; its value says whether they are sealed."""
        if not read.ok or read.value is None:
            return Read(read.status, None, read.reason, read.last_modified)
        spool.write(items[index][0], read.value)
        return Read.success(is_sealed(read.value, max_bytes=max_bytes), read.last_modified)

    fetched = peers.get_each([(hotkey, key) for _, hotkey in items], max_bytes, to_disk)
    why: dict[int, str | None] = {}
    sealed = [i for i, read in enumerate(fetched) if read.value]
    keys = fetch_reveals(peers, [items[i][1] for i in sealed], window)
    for i, key_read in zip(sealed, keys, strict=True):
        uid, hotkey = items[i]
        raw = Read.success(spool.path(uid).read_bytes(), fetched[i].last_modified)
        opened, why[i] = open_with_reveal(raw, key_read, hotkey, window, max_bytes, reveal_by)
        if why[i] is None and opened.value is not None:
            spool.write(uid, opened.value)
        del raw, opened
    return [Upload(uid=uid, hotkey=hotkey, key=key, data=None, last_modified=read.last_modified,
                   status=read.status, rejected=why.get(i), payload=Payload.SPOOLED if read.ok else Payload.FAILED)
            for i, ((uid, hotkey), read) in enumerate(zip(items, fetched, strict=True))]


def fetch_update(peers: PeerBuckets, entry: RecordEntry, window: int, shapes: dict[str, tuple[int, ...]],
                 codec: CodecParams, max_bytes: int, raw: Read[bytes] | None = None) -> Read[dict[str, torch.Tensor]]:
    """One update a record lists: its sha256 and signature checked, decoded densely (`raw`: already fetched)."""
    raw = peers.get(entry.hotkey, entry.key, max_bytes=max_bytes) if raw is None else raw
    if not raw.ok or raw.value is None:
        return Read.failure(raw.status, raw.reason)
    if hashlib.sha256(raw.value).hexdigest() != entry.sha256:
        return Read.failure(ReadStatus.INVALID, f"{entry.key} of uid {entry.uid} changed since the record was signed")
    try:
        art = read_tensor_artifact(raw.value, kind="gradient", max_bytes=max_bytes, signer_ss58=entry.hotkey,
                                   window=window)
        return Read.success(decompress(art.tensors, shapes, codec), raw.last_modified)
    except (ArtifactError, CodecError) as e:
        return Read.failure(ReadStatus.INVALID, f"{entry.key} of uid {entry.uid}: {e}")


def _has_sha(read: Read[bytes], sha256: str) -> bool:
    return read.ok and read.value is not None and hashlib.sha256(read.value).hexdigest() == sha256


def fetch_record_inputs(peers: PeerBuckets, entries: list[RecordEntry], window: int, lead_hotkey: str | None,
                        max_bytes: int) -> list[tuple[Read[bytes], bool]]:
    """The artifact bytes of every update a record lists, and for each whether they came from the lead's mirror.

    The original (the miner's upload of `window` in its own bucket) is read first, all at once: its storage
    time is the one the deadline is checked against. An entry whose original is gone, or no longer has the
    record's sha256 (deleted or re-signed after the lead fetched it, or served differently to this reader), is
    then read from the lead's content-addressed mirror (`entry.key` when it is a `layout.input_key`, in
    `lead_hotkey`'s bucket). Two rounds at most, each within one fetch budget."""
    fetched = peers.get_all([(e.hotkey, layout.gradient_key(window) if layout.is_input_key(e.key) else e.key)
                             for e in entries], max_bytes)
    # a sealed original is opened with its revealed key (its timeliness was the lead's to judge)
    originals = [read if why is None else Read.failure(ReadStatus.INVALID, why)
                 for read, why in open_sealed_reads(peers, [e.hotkey for e in entries], window, fetched, max_bytes,
                                                    None)]
    found = [(read, False) for read in originals]
    retry = [i for i, (e, read) in enumerate(zip(entries, originals, strict=True))
             if lead_hotkey is not None and layout.is_input_key(e.key) and not _has_sha(read, e.sha256)]
    if retry and lead_hotkey is not None:
        mirrored = peers.get_all([(lead_hotkey, entries[i].key) for i in retry], max_bytes)
        for i, read in zip(retry, mirrored, strict=True):
            if read.ok:
                found[i] = (read, True)
    return found


def fetch_record_updates(peers: PeerBuckets, entries: list[RecordEntry], window: int,
                         shapes: dict[str, tuple[int, ...]], codec: CodecParams,
                         max_bytes: int, lead_hotkey: str | None = None) -> list[Read[dict[str, torch.Tensor]]]:
    """`fetch_update` of every update a record lists, fetched at once (`fetch_record_inputs`: the original,
    else the lead's mirror)."""
    raws = fetch_record_inputs(peers, entries, window, lead_hotkey, max_bytes)
    return [fetch_update(peers, e, window, shapes, codec, max_bytes, raw=r)
            for e, (r, _mirrored) in zip(entries, raws, strict=True)]


def fetch_checkpoint(peers: PeerBuckets, lead_hotkey: str, window: int, max_bytes: int) -> Read[TensorArtifact]:
    """The lead's signed checkpoint of theta_window (tensors and manifest; not yet checked against a model),
    within the run's checkpoint fetch budget."""
    raw = peers.get(lead_hotkey, layout.checkpoint_key(window), max_bytes=max_bytes, budget=peers.checkpoint_budget)
    if not raw.ok or raw.value is None:
        return Read.failure(raw.status, raw.reason)
    try:
        art = read_tensor_artifact(raw.value, kind="checkpoint", max_bytes=max_bytes, signer_ss58=lead_hotkey,
                                   window=window)
        return Read.success(art, raw.last_modified)
    except ArtifactError as e:
        return Read.failure(ReadStatus.INVALID, f"checkpoint of window {window}: {e}")


def fetch_checkpoint_manifest(peers: PeerBuckets, lead_hotkey: str, window: int) -> Read[dict]:
    """The signed manifest of the lead's checkpoint of `window`, from two range reads of its safetensors header
    (the length, then the header: at most `artifacts.MAX_HEADER_BYTES`), never the weights. Checked for kind,
    signer, window and signature (`artifacts.read_tensor_manifest`), so its `fingerprint` is the lead's signed
    word; a hostile header is INVALID with the reason."""
    key = layout.checkpoint_key(window)
    prefix = peers.get_range(lead_hotkey, key, 0, 8)
    if not prefix.ok or prefix.value is None:
        return Read.failure(prefix.status, prefix.reason)
    try:
        length = header_length(prefix.value)
    except ArtifactError as e:
        return Read.failure(ReadStatus.INVALID, f"checkpoint of window {window}: {e}")
    header = peers.get_range(lead_hotkey, key, 8, length)
    if not header.ok or header.value is None:
        return Read.failure(header.status, header.reason)
    try:
        return Read.success(read_tensor_manifest(header.value, kind="checkpoint", signer_ss58=lead_hotkey,
                                                 window=window))
    except ArtifactError as e:
        return Read.failure(ReadStatus.INVALID, f"checkpoint of window {window}: {e}")


def newest_record_before(peers: PeerBuckets, hotkey: str, window: int) -> int | None:
    """The newest window < `window` that `hotkey` published an aggregation record of (None: none), by listing
    its bucket (the lead election's input, `template.protocol.lead.lead_validator`)."""
    prefix = layout.record_key(0).rsplit("/", 1)[0] + "/"
    return max((w for w in peers.list_windows(hotkey, prefix) if w < window), default=None)


def open_own_bucket(access: BucketAccess, write_key_id: str, write_secret: str) -> OwnBucket:
    """This neuron's bucket: `access` (the read keys, published on chain) and a client with the write keys
    whose own writes retry for ~15 s (backoff 0.25 s doubling to 4 s), so a storage restart does not cost a
    window."""
    client = S3Client(access.endpoint, write_key_id, write_secret, access.region, max_attempts=OWN_WRITE_ATTEMPTS)
    return OwnBucket(access=access, client=client)


def newest_checkpoint(peers: PeerBuckets, lead_hotkey: str, max_window: int) -> int | None:
    """The newest window <= max_window the lead has a checkpoint of, if any."""
    eligible = [w for w in peers.list_windows(lead_hotkey, layout.checkpoint_prefix()) if w <= max_window]
    return max(eligible) if eligible else None


def fetch_hparams(peers: PeerBuckets, owner_hotkey: str) -> Read[bytes]:
    """The raw `hparams.json` the subnet owner publishes in the dataset bucket."""
    return peers.get(owner_hotkey, layout.hparams_key(), max_bytes=HPARAMS_MAX_BYTES)
