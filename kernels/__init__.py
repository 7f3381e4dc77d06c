"""Fused GPU kernels for the attention types of `attention.py`.

`kernels.lssa_triton` holds the Triton kernels for lssa and lssar (forward and backward).
Nothing is imported here so that `import kernels` works without triton; `attention.py`
imports the kernel module only when a fused kernel may be used (CUDA tensors, or CPU
tensors under Triton's interpreter, TRITON_INTERPRET=1).
"""

# The attention types that have a fused kernel. Defined here, below both attention.py (which
# dispatches to the kernel) and kernels/lssa_triton.py (whose MODE constant is the index in
# this tuple), so that neither imports the other for it.
KERNEL_TYPES = ("lssa", "lssar")
