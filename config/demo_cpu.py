# A tiny model on the embedded corpus that trains in about two minutes on 2 CPU cores.
# The loss stays far from converged: this shows the pipeline, not the paper's numbers.
#   python data/prepare.py embedded
#   python train.py config/demo_cpu.py --attention=lssar
model = "mini"
dataset = "embedded"
block_size = 64
batch_size = 16
total_batch_size = 0
max_iters = 300
learning_rate = 2e-3
warmup_iters = 30
min_lr = 2e-4
eval_interval = 100
eval_iters = 4
log_interval = 10
ckpt_interval = 100
device = "cpu"
compile = False                 # compiling would take longer than training
dtype = "float32"
out_dir = "out/demo-{attention}"
