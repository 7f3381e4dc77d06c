# GPT-2 774M (36 layers, width 1280).
include("config/paper_124m.py")
model = "gpt2-774M"
batch_size = 8
learning_rate = 2.5e-4
out_dir = "out/paper_774m-{attention}"
