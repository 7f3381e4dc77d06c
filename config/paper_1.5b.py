# GPT-2 1.5B (48 layers, width 1600).
include("config/paper_124m.py")
model = "gpt2-1.5B"
batch_size = 4
learning_rate = 2e-4
out_dir = "out/paper_1.5b-{attention}"
