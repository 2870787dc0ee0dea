"""Reads the metric series of an offline W&B run file (``run-<id>.wandb``): LevelDB-log records of protobufs.

wandb 0.31 ships no reader for its own run files in Python; this one follows the format as written: a 7-byte
header (``:W&B``, magic, version), then records in 32 KiB blocks, each with a 7-byte header (checksum, length,
type: full, first, middle, last), a block's tail shorter than a header being padding.
"""
import json
import struct
from pathlib import Path
from typing import Dict, Iterator, List

_BLOCK, _HEADER = 32768, 7


def _records(path: Path) -> Iterator[bytes]:
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, pending = _HEADER, b""
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + _HEADER])
        payload, pos = data[pos + _HEADER:pos + _HEADER + length], pos + _HEADER + length
        if kind == 1:
            yield payload
        elif kind in (2, 3):
            pending = (pending if kind == 3 else b"") + payload
        elif kind == 4:
            yield pending + payload


def history(path: Path) -> Dict[str, List[float]]:
    """``{metric name: [values in logging order]}`` of the run's history records."""
    from wandb.proto import wandb_internal_pb2

    series: Dict[str, List[float]] = {}
    for raw in _records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "history":
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                series.setdefault(key, []).append(json.loads(item.value_json))
    return series
