"""Read a W&B run file (run-*.wandb) without a server: it is a LevelDB-style log of protobuf records."""
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

BLOCK, HEADER = 32768, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path):
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, pending = 7, b""
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:  # the rest of a block too short for a header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        chunk, pos = data[pos + HEADER:pos + HEADER + length], pos + HEADER + length
        if kind == 0:
            pos += (BLOCK - pos % BLOCK) % BLOCK
        elif kind == FULL:
            yield _parse(chunk)
        elif kind in (FIRST, MIDDLE):
            pending = chunk if kind == FIRST else pending + chunk
        elif kind == LAST:
            yield _parse(pending + chunk)
            pending = b""


def _parse(raw: bytes) -> pb.Record:
    record = pb.Record()
    record.ParseFromString(raw)
    return record


def summarize(path: Path) -> dict:
    """The run's name, group, tags, and history rows as {key: value}."""
    import json

    out = {"history": []}
    for rec in records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out.update(name=rec.run.display_name, group=rec.run.run_group, tags=list(rec.run.tags))
        elif kind == "history":
            items = rec.history.item
            out["history"].append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in items})
    return out
