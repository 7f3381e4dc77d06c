# The paper's recipe (Gao et al. 2025): GPT-2 124M with RoPE on FineWeb sample-10BT.
# 18,865 steps of 524,288 tokens (~9.9B tokens), llm.c's GPT-2 124M schedule.
# Choose the attention on the command line; everything else stays the same:
#   torchrun --standalone --nproc_per_node=8 train.py config/paper_124m.py --attention=lssar
# On fewer GPUs, gradient accumulation keeps the 524,288-token step (lower batch_size if
# memory is short: the step stays the same, only the micro-steps change).
model = "gpt2-124M"
dataset = "fineweb-10B"
block_size = 1024
batch_size = 32                 # per GPU: 8 GPUs x 32 x 1024 x 2 micro-steps = 524,288 tokens
total_batch_size = 524288
max_iters = 18865
learning_rate = 6e-4
warmup_iters = 700
min_lr = 0.0                    # cosine to 0
weight_decay = 0.1
beta1, beta2 = 0.9, 0.95
grad_clip = 1.0
dtype = "auto"                  # bf16 autocast on GPU
eval_interval = 250
eval_iters = 20                 # 20 x 32 x 1024 = 655,360 validation tokens per evaluation, any GPU count
ckpt_interval = 1000
out_dir = "out/paper_124m-{attention}"       # out/<name>-<run>: docs/training.md#what-a-run-directory-holds
