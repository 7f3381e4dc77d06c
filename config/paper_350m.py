# GPT-2 350M (24 layers, width 1024), the paper's recipe scaled as GPT-3's table scales it.
include("config/paper_124m.py")
model = "gpt2-350M"
batch_size = 16                 # per GPU (80 GB); accumulation keeps 524,288 tokens a step
learning_rate = 3e-4
out_dir = "out/paper_350m-{attention}"
