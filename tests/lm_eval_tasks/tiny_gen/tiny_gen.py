"""The tiny_gen task's data: tiny_mc's questions (../tiny_mc/tiny_mc.jsonl), whatever the working directory."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tiny_mc"))
from tiny_mc import load  # noqa: E402,F401
