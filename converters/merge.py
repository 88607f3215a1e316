"""Plan a split GGUF (`name-00001-of-0000N.gguf` ...) as the one file a single-file writer would
have written: the first shard's metadata without the `split.*` keys, every shard's tensor infos
in order, and each tensor's bytes as extents of the stored shards (nothing is copied)."""

from __future__ import annotations

import gguf
import numpy as np

from modelstore.converters import tensorops
from modelstore.converters.errors import ConversionUnsupported
from modelstore.converters.plans import Plan, PlannedFile, Piece, StoredModel, gguf_header_bytes, gguf_summary
from modelstore.store.errors import BadModelFile
from modelstore.store.gguf_header import parse_gguf_kv

SPLIT_KEYS = ("split.no", "split.count", "split.tensors.count")


def plan_merge(stored: StoredModel, shards: list[str], merged_path: str) -> Plan:
    try:
        kvs = parse_gguf_kv(shards[0], stored.header_bytes(shards[0]))
    except BadModelFile as exc:
        raise ConversionUnsupported(str(exc)) from None
    values = {kv.key: kv.value for kv in kvs}
    if values.get("split.count") not in (None, len(shards)):
        raise ConversionUnsupported(f"split.count is {values.get('split.count')}, but {len(shards)} shards are stored")
    arch = values.get("general.architecture")
    if not isinstance(arch, str):
        raise ConversionUnsupported("the first shard has no general.architecture")
    writer = gguf.GGUFWriter(None, arch)
    for kv in kvs:
        if kv.key not in SPLIT_KEYS and kv.key != "general.architecture":  # the writer starts with it
            writer.add_key_value(kv.key, kv.value, kv.vtype, sub_type=kv.subtype)
    alignment = values.get("general.alignment")
    if isinstance(alignment, int):
        writer.data_alignment = alignment

    tensors: list[tuple[list[Piece], int]] = []
    for path in shards:
        for span in stored.header(path).tensors:
            qtype = gguf.GGMLQuantizationType[span.dtype]
            writer.add_tensor_info(span.name, span.shape, np.dtype(np.float32), span.length, raw_dtype=qtype)
            tensors.append((list(stored.extents(path, span.offset, span.length)), span.length))
    expected = values.get("split.tensors.count")
    if isinstance(expected, int) and expected != len(tensors):
        raise ConversionUnsupported(f"the shards hold {len(tensors)} tensors, split.tensors.count says {expected}")
    header = gguf_header_bytes(writer)
    pieces: list[Piece] = [header]
    for tensor_pieces, nbytes in tensors:
        pieces += tensor_pieces
        if pad := -nbytes % writer.data_alignment:
            pieces.append(tensorops.zeros(pad))
    how = f"{len(shards)} GGUF shards merged into one file (header rebuilt, tensors mapped from the shards)"
    planned = PlannedFile(merged_path, pieces)
    planned.weights = gguf_summary(header, planned.size, {"kind": "merged-gguf", "from": shards, "how": how})
    return Plan("merged-gguf", how, list(shards), [planned])
