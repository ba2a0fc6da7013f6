"""Admission checks for gradient uploads (DESIGN sections 4 and 8).

Every check is a deterministic function of the upload's bytes, its storage timestamp and
chain data, so every validator (and every miner replaying a record) reaches the same
verdict. A failed check is a value (`Admission.ok is False` with a stable reason code),
never an exception: a hostile upload is scored, not crashed on.

Reason codes (documented in docs/validator.md):

- fetch: `missing`, `too_large`, `fetch_error`, `no_commitment`, `late`
- sealed uploads (template/protocol/sealing.py): `key_missing`, `late_key`, `bad_key`
- framing and signature: every `ArtifactError.code` of template/protocol/artifacts.py, unchanged
  (`bad_manifest`, `unsigned`, `wrong_protocol`, `wrong_kind`, `wrong_signer`,
  `bad_signature`, `wrong_window`, `payload_mismatch`, `too_large`, `truncated`,
  `huge_header`, `malformed`, `bad_dtype`)
- manifest fields: `bad_fields`, `wrong_uid`, `wrong_codec`, `wrong_inner_steps`, `wrong_receipt`
- history (this validator's, for scoring only): `replay`, `near_copy` (gauntlet/nearcopy.py), `vanished` (an
  upload of the previous window that went into its gather set is gone or changed)
- payload: `codec_<CodecError.code>`, `bad_update`, `non_finite`
- sync: `out_of_sync` (a well-formed update computed on another base model)
- cross-upload: `copy` (see `detect_copies`)
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from typing import Any

import torch
from loguru import logger

from template.protocol.artifacts import ArtifactError, read_tensor_artifact
from template.protocol.config import HParams
from template.protocol.reads import ReadStatus
from template.protocol.sparseloco import CodecError, CodecParams, decompress_with_indices
from template.protocol.uploads import Payload
from template.protocol.uploads import Upload as Upload  # re-exported: what the checks judge
from template.protocol.windows import on_time

# -- reason codes ------------------------------------------------------------------------------
MISSING = "missing"
TOO_LARGE = "too_large"
FETCH_ERROR = "fetch_error"
NO_COMMITMENT = "no_commitment"
LATE = "late"
MALFORMED = "malformed"
BAD_FIELDS = "bad_fields"
WRONG_UID = "wrong_uid"
WRONG_CODEC = "wrong_codec"
WRONG_INNER_STEPS = "wrong_inner_steps"
WRONG_RECEIPT = "wrong_receipt"
REPLAY = "replay"
CODEC_PREFIX = "codec_"
BAD_UPDATE = "bad_update"
NON_FINITE = "non_finite"
OUT_OF_SYNC = "out_of_sync"
COPY = "copy"
NEAR_COPY = "near_copy"
VANISHED = "vanished"

FETCH_TIMEOUT = "fetch_timeout"
FETCH_DENIED = "fetch_denied"
FETCH_STATUS_REASONS = {ReadStatus.NOT_FOUND: MISSING, ReadStatus.TOO_LARGE: TOO_LARGE, ReadStatus.ERROR: FETCH_ERROR,
                        ReadStatus.NO_COMMITMENT: NO_COMMITMENT, ReadStatus.TIMEOUT: FETCH_TIMEOUT,
                        ReadStatus.DENIED: FETCH_DENIED, ReadStatus.INVALID: FETCH_ERROR}
GRADIENT_FIELDS = ("uid", "codec", "num_inner_steps", "data_receipt", "base_fingerprint")


@dataclass(frozen=True)
class Admission:
    """The verdict on one upload. `update` is the dense decoded pseudo-gradient when ok."""

    uid: int
    ok: bool
    reason: str | None
    update: dict[str, torch.Tensor] | None
    payload_sha256: str | None  # the manifest's tensor-payload digest, once the signature verified
    in_sync: bool  # False only when a verified manifest names a base model other than ours
    indices: dict[str, torch.Tensor] | None  # flat kept positions per tensor (copy detection)

    def reject(self, reason: str) -> Admission:
        return replace(self, ok=False, reason=reason, update=None, indices=None)


def _fail(uid: int, reason: str, *, payload_sha256: str | None = None, in_sync: bool = True) -> Admission:
    return Admission(uid=uid, ok=False, reason=reason, update=None, payload_sha256=payload_sha256,
                     in_sync=in_sync, indices=None)


def expected_codec_field(hparams: HParams) -> dict[str, int]:
    """The manifest's `codec` field every upload of this run must carry (as the miner writes it)."""
    return CodecParams.from_hparams(hparams).manifest_field()


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def check_manifest_fields(manifest: dict[str, Any], *, uid: int, hparams: HParams, expected_receipt: str) -> str | None:
    """The gradient-specific manifest fields; returns a reason code or None."""
    if any(f not in manifest for f in GRADIENT_FIELDS):
        return BAD_FIELDS
    if not _is_int(manifest["uid"]) or manifest["uid"] != uid:
        return WRONG_UID
    codec = manifest["codec"]
    want = expected_codec_field(hparams)
    if not isinstance(codec, dict) or set(codec) != set(want) or any(
            not _is_int(codec[k]) or codec[k] != v for k, v in want.items()):
        return WRONG_CODEC
    if not _is_int(manifest["num_inner_steps"]) or manifest["num_inner_steps"] != hparams.inner_steps:
        return WRONG_INNER_STEPS
    if not isinstance(manifest["data_receipt"], str) or manifest["data_receipt"] != expected_receipt:
        return WRONG_RECEIPT
    if not isinstance(manifest["base_fingerprint"], str):
        return BAD_FIELDS
    return None


def check_decoded(update: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]]) -> str | None:
    """Belt and braces over the codec's own validation: exact names, shapes, float, finite."""
    if set(update) != set(shapes):
        return BAD_UPDATE
    for name, shape in shapes.items():
        t = update[name]
        if tuple(t.shape) != tuple(shape) or not t.is_floating_point():
            return BAD_UPDATE
    if not all(bool(torch.isfinite(t).all()) for t in update.values()):
        return NON_FINITE
    return None


def admit_upload(
    upload: Upload,
    *,
    window: int,
    deadline_s: float,
    hparams: HParams,
    shapes: dict[str, tuple[int, ...]],
    expected_receipt: str,
    base_fingerprint: str,
    seen_payloads: set[str],
) -> Admission:
    """Run every admission check in a fixed order; never raises (unexpected errors -> `malformed`)."""
    try:
        return _admit(upload, window=window, deadline_s=deadline_s, hparams=hparams, shapes=shapes,
                      expected_receipt=expected_receipt, base_fingerprint=base_fingerprint,
                      seen_payloads=seen_payloads)
    except Exception as e:  # a hostile payload must never take the validator down
        logger.bind(window=window, uid=upload.uid).opt(exception=e).warning(f"admission crashed, rejecting: {e!r}")
        return _fail(upload.uid, MALFORMED)


def _admit(upload: Upload, *, window: int, deadline_s: float, hparams: HParams, shapes: dict[str, tuple[int, ...]],
           expected_receipt: str, base_fingerprint: str, seen_payloads: set[str]) -> Admission:
    uid = upload.uid
    log = logger.bind(window=window, uid=uid)
    if upload.status != "ok":
        return _fail(uid, FETCH_STATUS_REASONS.get(upload.status, FETCH_ERROR))
    if upload.payload is not Payload.IN_MEMORY or upload.data is None:  # spooled: load it first
        return _fail(uid, FETCH_ERROR)
    if not on_time(upload.last_modified, deadline_s):
        return _fail(uid, LATE)
    if upload.rejected is not None:
        return _fail(uid, upload.rejected)
    try:
        art = read_tensor_artifact(upload.data, kind="gradient", max_bytes=hparams.max_upload_bytes,
                                   signer_ss58=upload.hotkey, window=window)
    except ArtifactError as e:
        log.debug(f"artifact rejected: {e}")
        return _fail(uid, e.code)
    manifest = art.manifest
    payload_sha = manifest["payload_sha256"]
    # out of sync only when the signed manifest names another base (a missing field is bad_fields)
    in_sync = manifest.get("base_fingerprint", base_fingerprint) == base_fingerprint
    reason = check_manifest_fields(manifest, uid=uid, hparams=hparams, expected_receipt=expected_receipt)
    if reason is None and payload_sha in seen_payloads:
        reason = REPLAY
    if reason is not None:
        return _fail(uid, reason, payload_sha256=payload_sha, in_sync=in_sync)
    codec = CodecParams.from_hparams(hparams)
    try:
        update, indices = decompress_with_indices(art.tensors, shapes, codec)
    except CodecError as e:
        log.debug(f"codec rejected the payload: {e}")
        return _fail(uid, CODEC_PREFIX + e.code, payload_sha256=payload_sha, in_sync=in_sync)
    reason = check_decoded(update, shapes)
    if reason is None and not in_sync:
        reason = OUT_OF_SYNC
    if reason is not None:
        return _fail(uid, reason, payload_sha256=payload_sha, in_sync=in_sync)
    return Admission(uid=uid, ok=True, reason=None, update=update, payload_sha256=payload_sha, in_sync=True,
                     indices=indices)


# -- copies within one window ------------------------------------------------------------------


def mark_replays(admissions: dict[int, Admission], seen_payloads: set[str]) -> dict[int, Admission]:
    """Reject admitted uploads whose tensor payload this validator saw in an earlier window.

    History differs between nodes (a late joiner has none), so this is the validator's
    finding for scoring, not part of the gather set every node reproduces.
    """
    return {uid: (adm.reject(REPLAY) if adm.ok and adm.payload_sha256 in seen_payloads else adm)
            for uid, adm in admissions.items()}


def _arrival_key(uid: int, last_modified: dict[int, float]) -> tuple[float, int]:
    # earlier whole second first (S3 resolution, same on every backend); a tie goes to the lower uid
    t = last_modified.get(uid)
    return (math.floor(t) if t is not None and math.isfinite(t) else math.inf, uid)


def index_overlap(admissions: list[Admission]) -> torch.Tensor:
    """(n, n) float64 matrix: kept positions shared by rows i and j / kept positions of row i.

    Every admission must carry `indices` (all decoded against the same shapes). Positions of
    all tensors are laid end to end; every row's (position, row) pairs are sorted together, so
    the rows that kept one position lie side by side, and pass d counts the pairs d apart that
    share a position (the passes end at the largest number of rows sharing one position). Exact
    integer counts, as a sparse incidence matrix times its transpose gave, in memory that grows
    with the kept positions only (issue 18: that product held ~280 MB at 256 uploads' sketches).
    """
    n = len(admissions)
    if n == 0:
        return torch.zeros(0, 0, dtype=torch.float64)
    indices = [a.indices for a in admissions if a.indices is not None]
    if len(indices) != n:
        raise ValueError("index_overlap needs the decoded indices of every admission")
    names = sorted(indices[0])
    span = {name: 1 + max((int(ix[name].max()) for ix in indices if ix[name].numel()), default=0)
            for name in names}
    offsets = dict(zip(names, itertools.accumulate([0] + [span[nm] for nm in names[:-1]]), strict=True))
    keys = []  # position * n + row: sorting them groups each position's rows
    for i, ix in enumerate(indices):
        flat = torch.cat([ix[nm].reshape(-1).to(torch.int64) + offsets[nm] for nm in names]
                         + [torch.empty(0, dtype=torch.int64)])
        keys.append(torch.unique(flat) * n + i)  # a position counts once
    position = torch.cat(keys)
    del keys
    position.numpy().sort()  # in place (keys are distinct): no second copy, no argsort indices
    row = position % n
    position //= n  # in place: (position, row) pairs, sorted by position then row
    upper = torch.zeros(n * n, dtype=torch.int64)  # (i, j), i < j: rows ascend within a position
    for d in range(1, n):
        same = position[d:] == position[:-d]
        if not bool(same.any()):
            break  # sorted: no position is shared by d + 1 rows, so by none more either
        pair = row[:-d][same]
        pair *= n
        pair += row[d:][same]
        upper += torch.bincount(pair, minlength=n * n)
        del same, pair
    pairs = upper.view(n, n)
    shared = (pairs + pairs.t() + torch.diag(torch.bincount(row, minlength=n))).to(torch.float64)  # (n, n)
    overlap: torch.Tensor = shared / shared.diagonal().clamp(min=1).unsqueeze(1)
    return overlap


def detect_copies(admissions: list[Admission], uploads: list[Upload], *, threshold: float) -> dict[int, str]:
    """uid -> "copy" for every admitted upload that duplicates an earlier admitted one.

    Earlier means an earlier whole second of LastModified (S3's resolution). Two matching
    uploads in the same second are both excluded (DESIGN section 3): nobody can tell who
    copied, and breaking the tie by uid would let a low uid steal by racing. A duplicate is
    either an identical tensor payload or an index overlap (shared kept positions / own kept
    positions) above `threshold`. Only admitted uploads take part: copying a rejected upload
    gains nothing, and is judged on its own.
    """
    last_modified = {u.uid: u.last_modified for u in uploads if u.last_modified is not None}
    admitted = sorted((a for a in admissions if a.ok), key=lambda a: _arrival_key(a.uid, last_modified))
    second = {a.uid: _arrival_key(a.uid, last_modified)[0] for a in admitted}
    copies: dict[int, str] = {}

    def mark(later: int, earlier: int) -> None:
        copies[later] = COPY
        if second[later] == second[earlier]:
            copies[earlier] = COPY

    first_by_payload: dict[str | None, int] = {}
    for a in admitted:
        if a.payload_sha256 in first_by_payload:
            mark(a.uid, first_by_payload[a.payload_sha256])
        else:
            first_by_payload[a.payload_sha256] = a.uid
    with_indices = [a for a in admitted if a.indices]
    if len(with_indices) >= 2:
        overlap = index_overlap(with_indices)
        for j in range(1, len(with_indices)):
            for i in range(j):
                if float(overlap[j, i]) > threshold:
                    mark(with_indices[j].uid, with_indices[i].uid)
    return copies
