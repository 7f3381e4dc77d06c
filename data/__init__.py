"""Data preparation (data/prepare.py), the dataset catalogue (data/catalog.py), token shards and
loaders (data/shards.py), GPT-2 tokenizer."""
