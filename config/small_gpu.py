# A small model on the embedded corpus that shows the extrapolation effect in minutes on one
# GPU (the spec's small-scale setting): 4 layers, width 256, 4 heads of 64, context 256,
# 800 steps of 32 x 256 tokens (~6.6M tokens, about two passes over the training split).
#   python data/prepare.py embedded
#   python train.py config/small_gpu.py --attention=lssar
model = "small"
dataset = "embedded"
block_size = 256
batch_size = 32
total_batch_size = 0            # one micro-step per process
max_iters = 800
learning_rate = 1e-3
warmup_iters = 80
min_lr = 1e-4
eval_interval = 100
eval_iters = 10
log_interval = 20
ckpt_interval = 400
out_dir = "out/small-{attention}"
compile = False                 # 800 short steps: compiling would take longer than it saves
