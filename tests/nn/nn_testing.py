"""What the tests of nn/'s ops share: float32 inputs, and an op run on Tensors that want gradients."""
import numpy as np

from seq2seq.core.autograd import Tensor


def f32(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def run(xp, op, *arrays):
    """Forward ``op`` on float32 Tensors that want gradients; return the output and the input Tensors."""
    tensors = [Tensor(xp.asarray(a), requires_grad=True) for a in arrays]
    return op(*tensors), tensors
