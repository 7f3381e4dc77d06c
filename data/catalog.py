"""
The datasets data/prepare.py can make, and where it puts them. Below both prepare.py (which
writes shards) and shards.py (whose errors say how to re-make them), so neither imports the other.
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


def default_out_dir(name) -> Path:
    return DATA_DIR / name


def prepare_command(data_dir) -> str:
    """The command that writes shards into data_dir (for error messages)."""
    name = Path(data_dir).name
    try:  # a directory prepare.py wrote says which dataset it holds
        name = json.loads((Path(data_dir) / "meta.json").read_text())["dataset"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if name in DATASETS and Path(data_dir).resolve() == default_out_dir(name).resolve():
        return f"python data/prepare.py {name}"
    if name in DATASETS:
        return f"python data/prepare.py {name} --out-dir {data_dir}"
    return f"python data/prepare.py DATASET --out-dir {data_dir} (DATASET: {', '.join(DATASETS)})"
