"""Reading what W&B wrote offline: the records of a ``run-*.wandb`` file (tests only).

The file is W&B's transaction log: a 7-byte header (``:W&B``, magic, version), then LevelDB-log
records (crc32c, length, type; 32 KiB blocks, a record cut into FIRST / MIDDLE / LAST pieces at a
block's end), each a ``wandb_internal_pb2.Record``. W&B has no Python reader of its own any more
(its core is a Go binary), so the tests read the file here to see what was logged.
"""

import json
import struct
from pathlib import Path

BLOCK = 32768
HEADER = 7


def _bodies(data: bytes):
    assert data[:4] == b":W&B", "not a W&B transaction log"
    pos, parts = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos: pos + HEADER])
        if length == 0 and kind == 0:  # zero padding to the block's end
            pos += left
            continue
        body = data[pos + HEADER: pos + HEADER + length]
        pos += HEADER + length
        if kind == 1:
            yield body
        elif kind == 2:
            parts = body
        elif kind == 3:
            parts += body
        elif kind == 4:
            yield parts + body


def read_offline_run(run_dir: Path) -> dict:
    """``{"history": [{key: value}, ...], "summary": {key: value}, "config": {...}}`` of the one
    offline run under ``run_dir/wandb``."""
    from wandb.proto import wandb_internal_pb2 as pb

    files = list(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    out = {"history": [], "summary": {}, "config": {}}
    for body in _bodies(files[0].read_bytes()):
        record = pb.Record()
        record.ParseFromString(body)
        kind = record.WhichOneof("record_type")
        if kind == "history":
            out["history"].append({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                   for i in record.history.item})
        elif kind == "summary":
            out["summary"].update({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                   for i in record.summary.update})
        elif kind == "run":
            out["config"].update({i.key: json.loads(i.value_json) for i in record.run.config.update})
    return out
