"""GGUF header facts for /api/tags and /api/show, read without llama.cpp.

Reading the header ourselves (instead of `Llama(vocab_only=True).metadata`) keeps the engine's
model list cheap and importable without the native library, and gives the exact parameter
count from the tensor shapes, which is how Ollama computes `parameter_size`.
Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md (versions 2 and 3).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GGUF_MAGIC = b"GGUF"

# GGUF value type → struct format of one scalar (8 = string, 9 = array are handled apart).
_SCALARS: dict[int, str] = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9

# llama.cpp's llama_ftype values, named as Ollama names them (fs/ggml FileType.String).
FILE_TYPES: dict[int, str] = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4",
}


class GGUFError(ValueError):
    pass


@dataclass(frozen=True)
class GGUFInfo:
    architecture: str
    parameter_count: int
    file_type: int | None
    # Scalar key/values only; arrays (the vocabulary, merges) would bloat /api/show.
    kv: dict[str, Any] = field(default_factory=dict)

    def arch_value(self, key: str) -> Any:
        return self.kv.get(f"{self.architecture}.{key}")

    @property
    def quantization(self) -> str:
        return FILE_TYPES.get(self.file_type, "unknown") if self.file_type is not None else "unknown"

    @property
    def parameter_size(self) -> str:
        return human_number(self.parameter_count)

    @property
    def context_length(self) -> int | None:
        value = self.arch_value("context_length")
        return int(value) if value is not None else None

    @property
    def chat_template(self) -> str:
        return str(self.kv.get("tokenizer.chat_template") or "")

    def kv_cache_bytes(self, n_ctx: int, bytes_per_value: int = 2) -> int:
        """f16 K and V for n_ctx positions in every layer (what llama.cpp allocates by default)."""
        layers = int(self.arch_value("block_count") or 0)
        embd = int(self.arch_value("embedding_length") or 0)
        heads = int(self.arch_value("attention.head_count") or 1)
        heads_kv = int(self.arch_value("attention.head_count_kv") or heads)
        k_len = int(self.arch_value("attention.key_length") or (embd // heads if heads else 0))
        v_len = int(self.arch_value("attention.value_length") or k_len)
        return layers * n_ctx * heads_kv * (k_len + v_len) * bytes_per_value

    def model_info(self) -> dict[str, Any]:
        """/api/show's model_info: general.* and architecture keys, as Ollama lists them."""
        info = {k: v for k, v in self.kv.items() if not k.startswith("tokenizer.")}
        info["general.parameter_count"] = self.parameter_count
        return dict(sorted(info.items()))


def human_number(n: int) -> str:
    """Ollama's format.HumanNumber: 134515008 → "134.52M", 1_000_000_000 → "1B"."""
    for unit, scale, decimals in (("B", 1e9, 1), ("M", 1e6, 2)):
        if n >= scale:
            value = n / scale
            return f"{value:.0f}{unit}" if value == math.floor(value) else f"{value:.{decimals}f}{unit}"
    if n >= 1e3:
        return f"{n / 1e3:.0f}K"
    return str(n)


class _Reader:
    def __init__(self, buf: mmap.mmap) -> None:
        self.buf = buf
        self.pos = 0

    def scalar(self, fmt: str) -> Any:
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.scalar("<Q")
        raw = self.buf[self.pos : self.pos + n]
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def value(self, vtype: int) -> Any:
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            item_type, count = self.scalar("<I"), self.scalar("<Q")
            self.skip_items(item_type, count)
            return None
        fmt = _SCALARS.get(vtype)
        if fmt is None:
            raise GGUFError(f"unknown GGUF value type {vtype}")
        return self.scalar(fmt)

    def skip_items(self, item_type: int, count: int) -> None:
        if item_type in _SCALARS:
            self.pos += struct.calcsize(_SCALARS[item_type]) * count
        elif item_type == _STRING:
            for _ in range(count):
                self.pos += 8 + struct.unpack_from("<Q", self.buf, self.pos)[0]
        else:
            for _ in range(count):
                self.value(item_type)


def read_gguf(path: Path) -> GGUFInfo:
    """Parse the header (key/values and tensor shapes); the weights are never read."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        if buf[:4] != GGUF_MAGIC:
            raise GGUFError(f"{path} is not a GGUF file")
        r = _Reader(buf)
        r.pos = 4
        version = r.scalar("<I")
        if version < 2:
            raise GGUFError(f"{path}: GGUF version {version} is too old")
        n_tensors, n_kv = r.scalar("<Q"), r.scalar("<Q")
        kv: dict[str, Any] = {}
        try:
            for _ in range(n_kv):
                key = r.string()
                value = r.value(r.scalar("<I"))
                if value is not None:
                    kv[key] = value
            params = 0
            for _ in range(n_tensors):
                r.string()
                dims = [r.scalar("<Q") for _ in range(r.scalar("<I"))]
                r.pos += 4 + 8  # tensor type, data offset
                params += math.prod(dims)
        except struct.error as exc:
            raise GGUFError(f"{path}: truncated GGUF header ({exc})") from None
    file_type = kv.get("general.file_type")
    return GGUFInfo(
        architecture=str(kv.get("general.architecture", "unknown")),
        parameter_count=int(kv.get("general.parameter_count") or params),
        file_type=int(file_type) if file_type is not None else None,
        kv=kv,
    )


def file_sha256(path: Path, chunk: int = 4 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def mtime_rfc3339(path: Path) -> str:
    when = dt.datetime.fromtimestamp(path.stat().st_mtime, tz=dt.UTC)
    return when.isoformat().replace("+00:00", "Z")
