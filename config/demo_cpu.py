# The paper's effect on 2 CPU cores in minutes: a small model on the embedded corpus as UTF-8
# bytes. With 256 symbols the output layer costs next to nothing (with GPT-2's 50,257 it is
# most of a small model's compute on a CPU), so the same cores train a wider model on more
# text, and at context 64 bytes it learns to use its context; that is what makes softmax and
# lssa degrade beyond it. 700 steps of 16 x 64 bytes (~0.7M bytes, under a tenth of the train
# split): lssar's curve is flatter after 700 steps than after 900 (compare its 16x/1x in
# results/demo.json, 700 steps, with results/small-cpu/table.md, 900; docs/reproducing.md has both).
#   python data/prepare.py embedded --tokenizer bytes
#   python train.py config/demo_cpu.py --attention=lssar
model = "mini"                  # 4 layers, width 128, 4 heads of 32
dataset = "embedded-bytes"
block_size = 64
batch_size = 16
total_batch_size = 0
max_iters = 700
learning_rate = 3e-3
warmup_iters = 50
min_lr = 3e-4
eval_interval = 350
eval_iters = 4
log_interval = 50
ckpt_interval = 700
device = "cpu"
compile = False                 # compiling would take longer than training
dtype = "float32"
out_dir = "out/demo-{attention}"
