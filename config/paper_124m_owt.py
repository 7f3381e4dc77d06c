# The paper's recipe on OpenWebText instead of FineWeb (python data/prepare.py openwebtext).
include("config/paper_124m.py")
dataset = "openwebtext"
# OpenWebText's held-out split (every 2000th document) is ~4.5M tokens, less than the 5.2M that
# 20 x 32 x 1024 x 8 GPUs would need: 10 batches x 32 x 1024 x 8 GPUs = 2.6M tokens fit.
eval_iters = 10
