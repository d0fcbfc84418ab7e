"""The IDX file format of MNIST and Fashion-MNIST (http://yann.lecun.com/exdb/mnist/).

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions),
then one big-endian uint32 per dimension, then the values in C order, big-endian. Images files
(idx3) thus have a 16-byte header and label files (idx1) an 8-byte one. Files may be gzipped.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

# type code -> big-endian numpy dtype
IDX_DTYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}

GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzipped or not) into a native-endian numpy array of its shape.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a bad magic number, type code, or a size that does not match the header
            (a truncated download, for instance); the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    raw = path.read_bytes()
    if raw[:2] == GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise ValueError(f"{path}: corrupt gzip data ({err})") from err
    return parse_idx(raw, name=str(path))


def parse_idx(raw: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse the bytes of an (uncompressed) IDX file; see `read_idx`."""
    if len(raw) < 4:
        raise ValueError(f"{name}: too short for an IDX file ({len(raw)} bytes)")
    if raw[0] != 0 or raw[1] != 0:
        raise ValueError(
            f"{name}: not an IDX file (magic number {raw[:4].hex()} does not start with 0000)"
        )
    type_code, ndim = raw[2], raw[3]
    if type_code not in IDX_DTYPES:
        valid = ", ".join(f"0x{c:02x}" for c in IDX_DTYPES)
        raise ValueError(f"{name}: unknown IDX type code 0x{type_code:02x} (valid: {valid})")
    if ndim == 0:
        raise ValueError(f"{name}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(
            f"{name}: truncated IDX header ({len(raw)} bytes, {header} expected for {ndim} dimensions)"
        )
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_DTYPES[type_code])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{name}: IDX header says shape {shape} ({expected} data bytes) but the file holds "
            f"{len(raw) - header} data bytes (truncated or corrupt file?)"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    # Native byte order, writable: torch.from_numpy refuses read-only and non-native arrays.
    return data.astype(dtype.newbyteorder("="), copy=True)
