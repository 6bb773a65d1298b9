"""Read the pretrained MusiCNN TF1 checkpoints without TensorFlow.

The only public copy of the MusiCNN weights ships inside the ``musicnn`` 0.1.0
wheel on PyPI (ISC licence).  Installing that package is not an option (it pins
``numpy<1.17`` and needs TensorFlow), so we fetch the wheel with
``pip download --no-deps`` into the sonicbus cache and read the checkpoint files
straight out of the zip.

A TF1 checkpoint is a *tensor bundle*: an ``.index`` file that is a LevelDB-style
SSTable mapping variable names to serialized ``BundleEntryProto`` messages, and a
``.data-00000-of-00001`` shard holding the raw little-endian tensor bytes.  Both
formats are small and stable, so a hand-rolled parser (SSTable blocks + a
protobuf varint decoder) avoids pulling TensorFlow or protobuf in at run time.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MUSICNN_VERSION = "0.1.0"
MUSICNN_WHEEL_NAME = f"musicnn-{MUSICNN_VERSION}-py3-none-any.whl"
# Pinned so a tampered or truncated download is never parsed as weights.
MUSICNN_WHEEL_SHA256 = "f38a4890c648c1ddbb141c5d96d2b0a8cfcd36746002d896989f7b88beb65cfa"

_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_LEN = 48
_BLOCK_TRAILER_LEN = 5

# TensorFlow DataType enum values -> little-endian numpy dtypes.
_TF_DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"),  # DT_FLOAT
    2: np.dtype("<f8"),  # DT_DOUBLE
    3: np.dtype("<i4"),  # DT_INT32
    4: np.dtype("u1"),  # DT_UINT8
    5: np.dtype("<i2"),  # DT_INT16
    6: np.dtype("i1"),  # DT_INT8
    9: np.dtype("<i8"),  # DT_INT64
    10: np.dtype("?"),  # DT_BOOL
    19: np.dtype("<f2"),  # DT_HALF
}


class CheckpointFormatError(ValueError):
    """Raised when checkpoint bytes do not follow the tensor-bundle format."""


@dataclass(frozen=True)
class BundleEntry:
    """Where one variable lives in the data shard (decoded ``BundleEntryProto``)."""

    name: str
    dtype: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int


# --------------------------------------------------------------------------- #
# Locating the wheel
# --------------------------------------------------------------------------- #


def default_musicnn_cache_dir() -> Path:
    """Return ``$SONICBUS_CACHE_DIR/models/musicnn`` (default ``~/.cache/sonicbus``)."""
    root = os.environ.get("SONICBUS_CACHE_DIR") or os.path.join("~", ".cache", "sonicbus")
    return Path(root).expanduser() / "models" / "musicnn"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def ensure_musicnn_wheel(cache_dir: Path | str | None = None) -> Path:
    """Return the path of the verified musicnn wheel, downloading it if needed.

    pip runs as a subprocess of the current interpreter with ``--no-deps`` so the
    wheel's ancient numpy/TensorFlow pins are never resolved or installed.
    """
    directory = Path(cache_dir) if cache_dir is not None else default_musicnn_cache_dir()
    wheel = directory / MUSICNN_WHEEL_NAME
    if not wheel.is_file():
        directory.mkdir(parents=True, exist_ok=True)
        # Download into a private folder and rename: concurrent callers never see
        # a half-written wheel.
        with tempfile.TemporaryDirectory(dir=directory, prefix=".download-") as staging:
            command = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                f"musicnn=={MUSICNN_VERSION}",
                "-d",
                staging,
            ]
            try:
                result = subprocess.run(command, capture_output=True, text=True, check=False)
            except OSError as exc:  # pragma: no cover - interpreter without a usable pip
                raise RuntimeError(_download_hint(directory, str(exc))) from exc
            fetched = Path(staging) / MUSICNN_WHEEL_NAME
            if result.returncode != 0 or not fetched.is_file():
                detail = (result.stderr or result.stdout)[-2000:]
                raise RuntimeError(_download_hint(directory, detail))
            os.replace(fetched, wheel)
    actual = _sha256(wheel)
    if actual != MUSICNN_WHEEL_SHA256:
        raise RuntimeError(
            f"{wheel} has sha256 {actual}, expected {MUSICNN_WHEEL_SHA256}; delete it and "
            "let sonicbus download it again."
        )
    return wheel


def _download_hint(directory: Path, detail: str) -> str:
    return (
        f"Could not download the musicnn {MUSICNN_VERSION} wheel (it carries the pretrained "
        f"MusiCNN weights). Fetch it by hand with:\n"
        f"  {sys.executable} -m pip download --no-deps musicnn=={MUSICNN_VERSION} -d {directory}\n"
        f"or set SONICBUS_CACHE_DIR to a cache that already holds {MUSICNN_WHEEL_NAME} under "
        f"models/musicnn/.\npip said:\n{detail}"
    )


def read_wheel_member(wheel: Path | str, member: str) -> bytes:
    """Read one file out of the wheel zip (e.g. ``musicnn/configuration.py``)."""
    with zipfile.ZipFile(wheel) as archive:
        try:
            return archive.read(member)
        except KeyError as exc:
            raise FileNotFoundError(f"{member} is not inside {wheel}") from exc


def musicnn_checkpoint_files(
    cache_dir: Path | str | None = None, model: str = "MSD_musicnn"
) -> tuple[bytes, bytes]:
    """Return ``(index_bytes, data_bytes)`` of a musicnn checkpoint (default MSD_musicnn)."""
    wheel = ensure_musicnn_wheel(cache_dir)
    index = read_wheel_member(wheel, f"musicnn/{model}/.index")
    data = read_wheel_member(wheel, f"musicnn/{model}/.data-00000-of-00001")
    return index, data


# --------------------------------------------------------------------------- #
# Protobuf / SSTable primitives
# --------------------------------------------------------------------------- #


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode a base-128 varint at ``pos``; return ``(value, next_pos)``."""
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise CheckpointFormatError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise CheckpointFormatError("varint longer than 10 bytes")


def _proto_fields(buf: bytes) -> list[tuple[int, int, int | bytes]]:
    """Split a protobuf message into ``(field_number, wire_type, value)`` triples.

    Varints come back as ints, fixed32/fixed64 as unsigned ints, and
    length-delimited fields as raw bytes (nested messages are decoded by the caller).
    """
    fields: list[tuple[int, int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        tag, pos = _read_varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        value: int | bytes
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 1:
            value = int.from_bytes(buf[pos : pos + 8], "little")
            pos += 8
        elif wire == 2:
            length, pos = _read_varint(buf, pos)
            value = buf[pos : pos + length]
            pos += length
        elif wire == 5:
            value = int.from_bytes(buf[pos : pos + 4], "little")
            pos += 4
        else:
            raise CheckpointFormatError(f"unsupported protobuf wire type {wire}")
        if pos > len(buf):
            raise CheckpointFormatError("truncated protobuf field")
        fields.append((number, wire, value))
    return fields


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C_TABLE = _crc32c_table()


def _masked_crc32c(data: bytes) -> int:
    """LevelDB's masked CRC32C, used to validate each SSTable block."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _read_block(table: bytes, offset: int, size: int) -> bytes:
    """Return a block's contents after checking its compression byte and CRC."""
    end = offset + size
    if end + _BLOCK_TRAILER_LEN > len(table):
        raise CheckpointFormatError("block handle points past the end of the index")
    contents = table[offset:end]
    compression = table[end]
    if compression != 0:
        raise CheckpointFormatError(
            f"compressed SSTable block (type {compression}) is not supported"
        )
    stored = int.from_bytes(table[end + 1 : end + 5], "little")
    if _masked_crc32c(contents + bytes([compression])) != stored:
        raise CheckpointFormatError(f"CRC mismatch in index block at offset {offset}")
    return contents


def _block_entries(block: bytes) -> list[tuple[bytes, bytes]]:
    """Decode the prefix-compressed ``(key, value)`` entries of one block."""
    if len(block) < 4:
        raise CheckpointFormatError("block too small")
    num_restarts = int.from_bytes(block[-4:], "little")
    data_end = len(block) - 4 - 4 * num_restarts
    if data_end < 0:
        raise CheckpointFormatError("bad restart array")
    entries: list[tuple[bytes, bytes]] = []
    key = b""
    pos = 0
    while pos < data_end:
        shared, pos = _read_varint(block, pos)
        non_shared, pos = _read_varint(block, pos)
        value_len, pos = _read_varint(block, pos)
        if shared > len(key):
            raise CheckpointFormatError("shared key prefix longer than previous key")
        key = key[:shared] + block[pos : pos + non_shared]
        pos += non_shared
        entries.append((key, block[pos : pos + value_len]))
        pos += value_len
    return entries


def _block_handle(value: bytes) -> tuple[int, int]:
    offset, pos = _read_varint(value, 0)
    size, _ = _read_varint(value, pos)
    return offset, size


# --------------------------------------------------------------------------- #
# Tensor bundle
# --------------------------------------------------------------------------- #


def _decode_entry(name: str, value: bytes) -> BundleEntry:
    dtype = shard_id = offset = size = crc = 0
    shape: list[int] = []
    for number, _wire, field in _proto_fields(value):
        if number == 1 and isinstance(field, int):
            dtype = field
        elif number == 2 and isinstance(field, bytes):  # TensorShapeProto
            for dim_number, _, dim in _proto_fields(field):
                if dim_number == 2 and isinstance(dim, bytes):
                    dim_size = 0
                    for size_number, _, size_value in _proto_fields(dim):
                        if size_number == 1 and isinstance(size_value, int):
                            dim_size = size_value
                    shape.append(dim_size)
                elif dim_number == 3 and dim:
                    raise CheckpointFormatError(f"{name}: unknown-rank tensor")
        elif number == 3 and isinstance(field, int):
            shard_id = field
        elif number == 4 and isinstance(field, int):
            offset = field
        elif number == 5 and isinstance(field, int):
            size = field
        elif number == 6 and isinstance(field, int):
            crc = field
        elif number == 7:
            raise CheckpointFormatError(f"{name}: partitioned (sliced) variables are not supported")
    return BundleEntry(name, dtype, tuple(shape), shard_id, offset, size, crc)


def parse_bundle_index(index_bytes: bytes) -> dict[str, BundleEntry]:
    """Parse a tensor-bundle ``.index`` SSTable into ``{variable name: BundleEntry}``.

    The empty key holds the ``BundleHeaderProto`` (endianness/version) and is skipped.
    """
    if len(index_bytes) < _FOOTER_LEN:
        raise CheckpointFormatError("index file shorter than an SSTable footer")
    footer = index_bytes[-_FOOTER_LEN:]
    if int.from_bytes(footer[-8:], "little") != _TABLE_MAGIC:
        raise CheckpointFormatError("not an SSTable (bad magic number)")
    _meta_offset, pos = _read_varint(footer, 0)
    _meta_size, pos = _read_varint(footer, pos)
    index_offset, pos = _read_varint(footer, pos)
    index_size, _ = _read_varint(footer, pos)

    entries: dict[str, BundleEntry] = {}
    for _separator, handle in _block_entries(_read_block(index_bytes, index_offset, index_size)):
        block = _read_block(index_bytes, *_block_handle(handle))
        for key, value in _block_entries(block):
            if not key:
                continue
            name = key.decode("utf-8")
            entries[name] = _decode_entry(name, value)
    return entries


def read_bundle_tensor(entry: BundleEntry, data_bytes: bytes) -> np.ndarray:
    """Copy one tensor out of the (single) data shard as a native-endian array."""
    if entry.shard_id != 0:
        raise CheckpointFormatError(f"{entry.name}: multi-shard checkpoints are not supported")
    dtype = _TF_DTYPES.get(entry.dtype)
    if dtype is None:
        raise CheckpointFormatError(f"{entry.name}: unsupported TF dtype enum {entry.dtype}")
    count = int(np.prod(entry.shape, dtype=np.int64))
    if count * dtype.itemsize != entry.size:
        raise CheckpointFormatError(
            f"{entry.name}: shape {entry.shape} needs {count * dtype.itemsize} bytes, "
            f"entry says {entry.size}"
        )
    if entry.offset + entry.size > len(data_bytes):
        raise CheckpointFormatError(f"{entry.name}: tensor extends past the end of the data shard")
    flat = np.frombuffer(data_bytes, dtype=dtype, count=count, offset=entry.offset)
    return flat.astype(dtype.newbyteorder("="), copy=True).reshape(entry.shape)


def is_model_variable(name: str) -> bool:
    """True for network weights; False for optimizer slots and bookkeeping counters."""
    base = name.rsplit("/", 1)[-1]
    return "/Adam" not in name and base not in {"global_step", "beta1_power", "beta2_power"}


def read_bundle_tensors(
    index_bytes: bytes, data_bytes: bytes, model_only: bool = True
) -> dict[str, np.ndarray]:
    """Read every (model) variable of a tensor bundle into numpy arrays."""
    entries = parse_bundle_index(index_bytes)
    return {
        name: read_bundle_tensor(entry, data_bytes)
        for name, entry in sorted(entries.items())
        if not model_only or is_model_variable(name)
    }


def load_musicnn_tensors(
    cache_dir: Path | str | None = None, model: str = "MSD_musicnn"
) -> dict[str, np.ndarray]:
    """Fetch (if needed) and read the pretrained weights of a musicnn model."""
    index, data = musicnn_checkpoint_files(cache_dir, model)
    return read_bundle_tensors(index, data)
