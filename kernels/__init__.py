"""Fused GPU kernels for the attention types of `attention.py`.

`kernels.lssa_triton` holds one family of Triton kernels (forward and backward) that follows
`attention.RECIPES`: each type's positive weights, l1-normalisation and re-weighting are
compile-time switches. Nothing is imported here so that `import kernels` works without
triton; `attention.py` imports the kernel module only when a fused kernel may be used (CUDA
tensors, or CPU tensors under Triton's interpreter, TRITON_INTERPRET=1).
"""
import os

# The positive-weight functions of attention.RECIPES the kernels implement. Defined here, below
# both attention.py (which derives its KERNEL_TYPES from it) and kernels/lssa_triton.py, so that
# neither imports the other for it.
KERNEL_PHIS = ("softplus", "softplus_fixed", "sigmoid", "relu", "exp")
# The head dims the kernels take (their tiles hold a whole head row); here for the same reason:
# attention.py names them when it warns about a model whose head dim has none.
SUPPORTED_HEAD_DIMS = (16, 32, 64, 128)


class EnvError(ValueError):
    """An LSSA_TRITON_* environment variable set to a value the kernels do not take. Raised when
    kernels.lssa_triton is imported; attention.check_kernel lets it through instead of falling
    back to the reference (a typo must not silently change what runs)."""


def env_choice(name, choices, environ=None):
    """The value of environment variable `name`: one of `choices`, the first being the default
    (unset or empty). Anything else is an EnvError naming the variable, the value and the choices."""
    value = (os.environ if environ is None else environ).get(name, "")
    if value == "":
        return choices[0]
    if value not in choices:
        raise EnvError(f"{name}={value!r} is not valid; set it to one of: {', '.join(choices)} "
                       f"(or unset it for the default, {choices[0]})")
    return value
