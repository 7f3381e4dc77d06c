"""
The datasets data/prepare.py can make, where it puts them and what a prepared directory says
of itself (meta.json). Below both prepare.py (which writes shards) and shards.py (whose errors
say how to re-make them), so neither imports the other.
"""
import json
from dataclasses import dataclass
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent  # data/<dataset>/ by default


@dataclass(frozen=True)
class DatasetSpec:
    prefix: str  # shard file prefix, llm.c's where llm.c has one
    hub: str = None  # Hugging Face dataset repo
    config: str = None
    val_every: int = 0  # 0: the first shard is validation; K: every K-th document is
    approx_tokens: int = None  # for the progress bar
    licence: str = ""


DATASETS = {
    "embedded": DatasetSpec("embedded", val_every=8, licence="public domain (Bible, Shakespeare, Milton); "
                            "with --with-wikipedia also CC BY-SA 3.0 text by Wikipedia contributors"),
    "fineweb-10B": DatasetSpec("fineweb", "HuggingFaceFW/fineweb", "sample-10BT", approx_tokens=10**10,
                               licence="ODC-By 1.0, subject to Common Crawl's terms of use"),
    "fineweb-100B": DatasetSpec("fineweb", "HuggingFaceFW/fineweb", "sample-100BT", approx_tokens=10**11,
                                licence="ODC-By 1.0, subject to Common Crawl's terms of use"),
    "fineweb-edu-10B": DatasetSpec("edu_fineweb", "HuggingFaceFW/fineweb-edu", "sample-10BT", approx_tokens=10**10,
                                   licence="ODC-By 1.0, subject to Common Crawl's terms of use"),
    "openwebtext": DatasetSpec("openwebtext", "Skylion007/openwebtext", val_every=2000, approx_tokens=9 * 10**9,
                               licence="CC0 1.0 for the collection; the texts remain their authors'"),
}


def default_out_dir(name, tokenizer="gpt2") -> Path:
    return DATA_DIR / (name if tokenizer == "gpt2" else f"{name}-{tokenizer}")


def read_meta(data_dir) -> dict:
    """The meta.json prepare.py wrote into data_dir ({} where there is none)."""
    try:
        meta = json.loads((Path(data_dir) / "meta.json").read_text())
        return meta if isinstance(meta, dict) else {}
    except (OSError, ValueError):
        return {}


def shards_tokenizer(data_dir) -> tuple:
    """(tokenizer name, vocabulary size) of the shards in data_dir, from their meta.json.
    Shards without one (llm.c's, or written by hand) are taken as GPT-2's with the vocabulary
    unknown: ("gpt2", None); meta.json files from before byte-level data said "tiktoken gpt2 ..."
    and are GPT-2's."""
    from data.tokenizer import VOCAB_SIZES  # here: the loaders do not need tiktoken

    name = read_meta(data_dir).get("tokenizer")
    if name in VOCAB_SIZES:
        return name, VOCAB_SIZES[name]
    if isinstance(name, str) and name.startswith("tiktoken gpt2"):
        return "gpt2", VOCAB_SIZES["gpt2"]
    return "gpt2", None


def prepare_command(data_dir) -> str:
    """The command that writes shards into data_dir (for error messages)."""
    name, tokenizer = Path(data_dir).name, shards_tokenizer(data_dir)[0]
    name = read_meta(data_dir).get("dataset", name)  # a directory prepare.py wrote says which dataset it holds
    if name not in DATASETS and name.endswith("-bytes"):  # data/<dataset>-bytes before it is made
        name, tokenizer = name[:-len("-bytes")], "bytes"
    option = " --tokenizer bytes" if tokenizer == "bytes" else ""
    if name in DATASETS and Path(data_dir).resolve() == default_out_dir(name, tokenizer).resolve():
        return f"python data/prepare.py {name}{option}"
    if name in DATASETS:
        return f"python data/prepare.py {name}{option} --out-dir {data_dir}"
    return f"python data/prepare.py DATASET --out-dir {data_dir} (DATASET: {', '.join(DATASETS)})"
