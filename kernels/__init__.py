"""Fused GPU kernels for the attention types of `attention.py`.

`kernels.lssa_triton` holds one family of Triton kernels (forward and backward) that follows
`attention.RECIPES`: each type's positive weights, l1-normalisation and re-weighting are
compile-time switches. Nothing is imported here so that `import kernels` works without
triton; `attention.py` imports the kernel module only when a fused kernel may be used (CUDA
tensors, or CPU tensors under Triton's interpreter, TRITON_INTERPRET=1).
"""

# The positive-weight functions of attention.RECIPES the kernels implement. Defined here, below
# both attention.py (which derives its KERNEL_TYPES from it) and kernels/lssa_triton.py, so that
# neither imports the other for it.
KERNEL_PHIS = ("softplus", "softplus_fixed", "sigmoid", "relu", "exp")
