"""The tiny_mc task's data: tiny_mc.jsonl beside this file, whatever the working directory."""
import json
import os

import datasets


def load(**_):
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny_mc.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})
