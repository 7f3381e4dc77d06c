"""Fused GPU kernels for the attention types of `attention.py`.

`kernels.lssa_triton` holds the Triton kernels for lssa and lssar (forward and backward).
Nothing is imported here so that `import kernels` works without triton; `attention.py`
imports the kernel module only when a fused kernel may be used (CUDA tensors, or CPU
tensors under Triton's interpreter, TRITON_INTERPRET=1).
"""
