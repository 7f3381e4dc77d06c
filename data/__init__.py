"""Data preparation (data/prepare.py), token shards and loaders (data/shards.py), GPT-2 tokenizer."""
