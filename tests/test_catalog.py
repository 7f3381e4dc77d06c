"""data/catalog.py: where each dataset's shards go, what a prepared directory says of itself
(meta.json), and the command an error message gives to re-make shards."""
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from data.catalog import DATA_DIR, default_out_dir, prepare_command, read_meta, shards_tokenizer  # noqa: E402

REPO_DATA = Path(__file__).resolve().parent.parent / "data"


def meta_dir(tmp_path, meta, name="d"):
    d = tmp_path / name
    d.mkdir()
    if meta is not None:
        (d / "meta.json").write_text(meta if isinstance(meta, str) else json.dumps(meta))
    return d


def test_default_out_dir_is_data_slash_dataset_with_the_tokenizer_beside_it():
    assert DATA_DIR == REPO_DATA
    assert default_out_dir("fineweb-10B") == REPO_DATA / "fineweb-10B"
    assert default_out_dir("embedded", "gpt2") == REPO_DATA / "embedded"
    assert default_out_dir("embedded", "bytes") == REPO_DATA / "embedded-bytes"


def test_read_meta_is_empty_for_a_missing_broken_or_non_object_meta_json(tmp_path):
    assert read_meta(meta_dir(tmp_path, None, "none")) == {}
    assert read_meta(meta_dir(tmp_path, "{not json", "broken")) == {}
    assert read_meta(meta_dir(tmp_path, [1, 2], "list")) == {}
    assert read_meta(str(meta_dir(tmp_path, {"dataset": "embedded", "n": 3}, "ok"))) == {"dataset": "embedded", "n": 3}


def test_shards_tokenizer_from_meta_json(tmp_path):
    assert shards_tokenizer(meta_dir(tmp_path, {"tokenizer": "bytes"}, "b")) == ("bytes", 256)
    assert shards_tokenizer(meta_dir(tmp_path, {"tokenizer": "gpt2"}, "g")) == ("gpt2", 50257)
    # meta.json from before byte-level data: "tiktoken gpt2 ..." is GPT-2's
    assert shards_tokenizer(meta_dir(tmp_path, {"tokenizer": "tiktoken gpt2 (r50k_base)"}, "old")) == ("gpt2", 50257)
    # no meta.json, none named, or something else: GPT-2's with the vocabulary unknown
    assert shards_tokenizer(meta_dir(tmp_path, None, "llmc")) == ("gpt2", None)
    assert shards_tokenizer(meta_dir(tmp_path, {"dataset": "x"}, "unnamed")) == ("gpt2", None)
    assert shards_tokenizer(meta_dir(tmp_path, {"tokenizer": 7}, "number")) == ("gpt2", None)
    assert shards_tokenizer(meta_dir(tmp_path, {"tokenizer": "sentencepiece gpt2"}, "other")) == ("gpt2", None)


def test_prepare_command_names_the_dataset_tokenizer_and_directory(tmp_path):
    # the catalog's own directories: no --out-dir
    assert prepare_command(REPO_DATA / "openwebtext") == "python data/prepare.py openwebtext"
    assert prepare_command(REPO_DATA / "embedded-bytes") == "python data/prepare.py embedded --tokenizer bytes"
    # a directory of the dataset's name elsewhere
    elsewhere = tmp_path / "fineweb-10B"
    assert prepare_command(elsewhere) == f"python data/prepare.py fineweb-10B --out-dir {elsewhere}"
    bytes_elsewhere = tmp_path / "embedded-bytes"
    assert prepare_command(bytes_elsewhere) == (f"python data/prepare.py embedded --tokenizer bytes "
                                                f"--out-dir {bytes_elsewhere}")
    # a directory prepare.py wrote says which dataset and tokenizer it holds, whatever its name
    written = meta_dir(tmp_path, {"dataset": "openwebtext", "tokenizer": "bytes"}, "mine")
    assert prepare_command(written) == f"python data/prepare.py openwebtext --tokenizer bytes --out-dir {written}"
    gpt2 = meta_dir(tmp_path, {"dataset": "embedded", "tokenizer": "gpt2"}, "mine2")
    assert prepare_command(gpt2) == f"python data/prepare.py embedded --out-dir {gpt2}"
    # a directory naming no dataset lists them
    unknown = tmp_path / "shards"
    assert prepare_command(unknown) == (f"python data/prepare.py DATASET --out-dir {unknown} (DATASET: embedded, "
                                        "fineweb-10B, fineweb-100B, fineweb-edu-10B, openwebtext)")
    # only a name ending in "-bytes" is a byte-level dataset's (this one minus its last 6 characters would be one)
    old = tmp_path / "embedded_older"
    assert prepare_command(old) == (f"python data/prepare.py DATASET --out-dir {old} (DATASET: embedded, "
                                    "fineweb-10B, fineweb-100B, fineweb-edu-10B, openwebtext)")
    unknown_bytes = tmp_path / "mystery-bytes"
    assert prepare_command(unknown_bytes) == (f"python data/prepare.py DATASET --out-dir {unknown_bytes} (DATASET: "
                                              "embedded, fineweb-10B, fineweb-100B, fineweb-edu-10B, openwebtext)")
