# A tiny model on the embedded corpus that trains in about two minutes on 2 CPU cores.
# The loss stays far from converged (~200K tokens): this shows the pipeline, not the paper's
# numbers. On a CPU the 50,257-token vocabulary projection costs more than the 4 layers, so
# the width is small and the context short.
#   python data/prepare.py embedded
#   python train.py config/demo_cpu.py --attention=lssar
model = "micro"                 # 4 layers, width 64, 4 heads
dataset = "embedded"
block_size = 64
batch_size = 16
total_batch_size = 0
max_iters = 200
learning_rate = 3e-3
warmup_iters = 12
min_lr = 3e-4
eval_interval = 80
eval_iters = 4
log_interval = 10
ckpt_interval = 80
device = "cpu"
compile = False                 # compiling would take longer than training
dtype = "float32"
out_dir = "out/demo-{attention}"
