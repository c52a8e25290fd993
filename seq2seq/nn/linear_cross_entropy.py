"""The LM head's projection and the cross-entropy loss as one op: ``logits = h W^T + b``, and their mean loss.

    logits = h @ W^T + b                          # [..., C] -> [..., V], nn/functional.py's Linear
    loss   = cross_entropy(logits, labels)        # [N, V] -> (), nn/functional.py's CrossEntropy

Why one op for two that exist on their own: memory in backward. Composed, the loss's backward hands the projection
a gradient as large as the logits, ``[N, V]``: 60 MB for a batch of 16 x 32 target tokens and BERT's 30,522-token
vocabulary. It appears at the start of backward, beside every activation the forward pass saved, which is when a
training step needs the most memory. Fused, the backward's fast CPU form (``fast/cpu/cross_entropy.py``,
``projected_grads``) makes that gradient a slice of the vocabulary at a time and multiplies each slice into the
gradients of the input, the weight and the bias at once, so the ``[N, V]`` gradient never exists whole.

The plain form is the two ops, forward and backward, composed: what CuPy (and ``fast_cpu.disabled()``) runs, and
what the fused form is tested against. The forward pass is the same in both forms.

Two outputs: the logits (the model returns them) and the loss. A gradient usually reaches only the loss, but a
caller may build a loss of their own from the logits as well; both are taken. ``fills_missing_grads`` is off: the
logits' gradient comes as None when nothing used them, rather than as an ``[..., V]`` array of zeros.

Only a weight stored ``[V, C]`` (``torch.nn.Linear``'s layout, which every LM head here has: the tied word
embeddings) is taken; GPT-2's ``Conv1D`` layout is not an LM head's.
"""
from ..core.autograd import Function
from ..core.backend import get_array_module
from ..core.inputs import IGNORE_INDEX
from ..fast import cpu as fast_cpu
from ..fast.cpu import cross_entropy as fast_cross_entropy
from .functional import CrossEntropy, Linear


class LinearCrossEntropy(Function):
    """``(h W^T + b, cross_entropy(h W^T + b, labels))`` for ``h`` ``[..., C]``, ``W`` ``[V, C]``, ``b`` ``[V]`` or
    absent, ``labels`` with one entry per row of ``h`` (``ignore_index`` and ``label_smoothing`` as CrossEntropy's).
    """

    fills_missing_grads = False  # see the module's docstring

    def __init__(self, labels, ignore_index=IGNORE_INDEX, *, label_smoothing=0.0):
        self.projection = Linear()
        self.loss = CrossEntropy(labels, ignore_index, label_smoothing=label_smoothing)

    def forward(self, h, weight, bias=None):
        logits = self.projection.forward(h, weight, bias)  # [..., C] -> [..., V]
        loss = self.loss.forward(logits.reshape(-1, logits.shape[-1]))  # [..., V] -> [N, V] -> ()
        return logits, loss

    def backward(self, g_logits, g_loss):
        xp = get_array_module(g_logits if g_loss is None else g_loss)
        shape = self.projection.x.shape[:-1] + (self.loss.x.shape[-1],)  # the logits', [..., V]
        self.projection.needs_input_grad = self.needs_input_grad
        if g_loss is None:  # only the logits were used: the projection's own backward
            return self.projection.backward(g_logits)
        g2 = None if g_logits is None else g_logits.reshape(-1, shape[-1])  # [..., V] -> [N, V]
        if fast_cpu.enabled(xp) and self.loss.x.dtype == self.loss.dtype:  # float16: the plain form (wider x)
            ce, h = self.loss, self.projection.x
            needs = tuple(self.needs_input_grad) + (False,) * (3 - len(self.needs_input_grad))  # (h, weight, bias)
            gh2, gw, gb = fast_cross_entropy.projected_grads(
                ce.x, ce.m, ce.log_sum, ce.safe, ce.row_weights(g_loss), smoothing=ce.eps, g_logits=g2,
                h2=h.reshape(-1, h.shape[-1]), w=self.projection.weight, needs=needs)
            return (None if gh2 is None else gh2.reshape(h.shape)), gw, gb  # [N, C] -> [..., C]
        g = self.loss.backward(g_loss)  # [N, V], an array of its own
        if g2 is not None:
            g += g2
        return self.projection.backward(g.reshape(shape))  # [N, V] -> [..., V]


def linear_cross_entropy(h, weight, bias, labels, ignore_index=IGNORE_INDEX, *, label_smoothing=0.0):
    """``(logits, loss)`` as Tensors: ``linear(h, weight, bias)`` and ``cross_entropy`` of those logits (flattened
    to rows) against ``labels``, as one op (see the module's docstring)."""
    op = LinearCrossEntropy(labels, ignore_index, label_smoothing=label_smoothing)
    return op(h, weight) if bias is None else op(h, weight, bias)
