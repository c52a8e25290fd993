"""Reverse-mode automatic differentiation: ``Tensor``, ``Function`` and ``no_grad``.

A ``Tensor`` wraps an array (NumPy or CuPy) and remembers the ``Function`` that made it. Calling a ``Function``
runs its ``forward`` on raw arrays; when gradients are wanted it also records itself as the creator of its outputs,
so the calls form a graph. ``loss.backward()`` walks that graph from the loss back to the leaves in reverse
topological order, calling each function's ``backward`` with the gradient of its outputs and adding what comes back
into the gradients of its inputs. This is the design of DeZero (``Variable``/``Function``) and micrograd, written for
first-order gradients only, which is all that fine-tuning needs.

Gradients of leaves (parameters, or any tensor made with ``requires_grad=True``) land on ``tensor.grad`` and *add up*
across uses and across ``backward`` calls, as in PyTorch (so a weight used twice, such as an LM head tied to the
word embeddings, collects both contributions). Gradients of intermediate tensors live only while ``backward`` runs
and are freed as soon as the function that needs them has used them. (candle returns a separate ``GradStore`` and
MLX returns a tree of gradients instead: a functional alternative; ``.grad`` on the tensor is the familiar one.)

Under ``with no_grad():`` nothing is recorded, so inference runs through exactly the same code without keeping any
graph alive. The switch belongs to the thread that flips it, as in PyTorch: a thread generating under ``no_grad``
leaves another thread's training step recording its graph.
"""
import contextlib
import threading
import weakref

from .backend import get_array_module, to_numpy


class _GradMode(threading.local):
    enabled = True  # a class attribute: what every thread sees until it sets its own


_grad_mode = _GradMode()


@contextlib.contextmanager
def no_grad():
    """Run the body without recording a graph (inference): ``with no_grad(): logits = model(ids).logits``.
    Only the calling thread stops recording."""
    previous, _grad_mode.enabled = _grad_mode.enabled, False
    try:
        yield
    finally:
        _grad_mode.enabled = previous


def is_grad_enabled():
    """True unless the calling thread is inside ``no_grad()``."""
    return _grad_mode.enabled


class Tensor:
    """An array with an optional gradient and a link to the function that produced it."""

    # Makes ``ndarray * Tensor`` call ``Tensor.__rmul__`` instead of NumPy broadcasting over a Tensor object.
    __array_priority__ = 1000

    def __init__(self, data, *, requires_grad=False, name=None):
        xp = get_array_module(data)
        self.data = data if isinstance(data, xp.ndarray) else xp.asarray(data)
        self.grad = None
        self.requires_grad = requires_grad
        self.name = name
        self.slot = None  # this tensor's place among its creator's outputs (a Slot), when a graph is recorded

    @property
    def creator(self):
        """The Function that made this tensor (None for a leaf, or a value computed under ``no_grad``)."""
        return None if self.slot is None else self.slot.creator

    # -- array-like properties ------------------------------------------------------------------------------
    @property
    def shape(self):
        return self.data.shape

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def size(self):
        return self.data.size

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        name = f" {self.name!r}" if self.name else ""
        return f"Tensor{name}(shape={self.shape}, dtype={self.dtype}, requires_grad={self.requires_grad})"

    def numpy(self):
        """The data as a NumPy array on the host (a copy when it lives on the GPU)."""
        return to_numpy(self.data)

    def item(self):
        """The value of a one-element tensor as a Python number."""
        return self.data.item()

    def __float__(self):
        return float(self.data)

    def __array__(self, dtype=None, copy=None):
        array = to_numpy(self.data)
        return array if dtype is None else array.astype(dtype)

    def detach(self):
        """A new leaf tensor sharing this one's data, cut from the graph."""
        return Tensor(self.data)

    # -- backward -------------------------------------------------------------------------------------------
    def backward(self, grad=None):
        """Accumulate d(self)/d(leaf) into ``leaf.grad`` for every leaf that requires a gradient.

        ``grad`` defaults to ones, so ``loss.backward()`` works for a scalar loss.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() called on a tensor that does not require grad "
                               "(was it computed under no_grad(), or from inputs without requires_grad?)")
        xp = get_array_module(self.data)
        # (not getattr(grad, "data", grad): a NumPy array's .data is its memoryview)
        seed = xp.ones_like(self.data) if grad is None else xp.asarray(grad.data if isinstance(grad, Tensor) else grad)
        if self.creator is None:  # backward on a leaf itself
            _accumulate_leaf_grad(self, seed, {id(seed)})
            return
        # Pending gradients of the graph's intermediate values, keyed by their slot (see Function.__call__).
        pending = {self.slot: seed}
        handed_out = {id(seed)}  # ids of arrays stored as some leaf's .grad, or the caller's: never share one
        order = list(_topological_order(self))
        if any(function.inputs is None for function in order):  # release() emptied it: refuse, as torch does
            raise RuntimeError("backward() through a graph that an earlier backward() already freed; "
                               "run the forward pass again to build a new graph")
        for function in order:
            slots = [ref() for ref in function.outputs]  # None: an output nothing used, so no gradient reaches it
            gys = [None if slot is None else pending.pop(slot, None) for slot in slots]
            if all(g is None for g in gys):
                continue
            if function.fills_missing_grads:
                gys = [xp.zeros(shape, dtype=dtype) if g is None else g
                       for g, (shape, dtype) in zip(gys, function.output_specs)]
            gxs = function.backward(*gys)
            if not isinstance(gxs, tuple):
                gxs = (gxs,)
            for x, gx, needed in zip(function.inputs, gxs, function.needs_input_grad):
                if not needed or gx is None:
                    continue
                if isinstance(x, Tensor):  # a leaf: the gradient is kept on the tensor
                    _accumulate_leaf_grad(x, gx, handed_out)
                else:
                    previous = pending.get(x)
                    pending[x] = gx if previous is None else previous + gx
            function.release()  # free what forward saved: nothing will ask for it again

    # -- operators: defined in ops.py, attached at the end of that module ----------------------------------


def _accumulate_leaf_grad(x, g, handed_out):
    """``x.grad += g``, keeping ``x.grad`` an array of x's own, so that in-place updates of it are safe.

    ``g`` is copied when it is already another leaf's gradient (``y = a + b`` hands both the same array) or a view
    of some other array (``Sum`` returns a read-only broadcast view, ``Reshape`` and ``Concat`` views of their input).
    """
    if x.grad is not None:
        x.grad = x.grad + g
    elif id(g) in handed_out or getattr(g, "base", None) is not None:
        x.grad = g.copy()
    else:
        x.grad = g
    handed_out.add(id(x.grad))


def _topological_order(root):
    """Functions reachable from ``root``, each after every function that consumes its outputs."""
    order, visited = [], set()
    stack = [(root.creator, False)]
    while stack:  # iterative depth-first search: deep graphs must not hit Python's recursion limit
        function, expanded = stack.pop()
        if expanded:
            order.append(function)
            continue
        if id(function) in visited:
            continue
        visited.add(id(function))
        stack.append((function, True))
        for x in function.inputs or ():
            if isinstance(x, Slot) and id(x.creator) not in visited:
                stack.append((x.creator, False))
    return reversed(order)


class Slot:
    """The graph's record of one output of a Function: the function that made it. It holds no array.

    Why not keep the output Tensor itself in the graph: the Tensor holds the array, which would then live until
    backward even when no backward needs it (an Add's output, say, once the LayerNorm after it has saved its
    input). Keeping only slots, the graph holds exactly the arrays the functions saved, as torch's autograd does.
    """

    __slots__ = ("creator", "__weakref__")

    def __init__(self, creator):
        self.creator = creator


def as_tensor(x):
    """Wrap an array or number in a Tensor (a Tensor is returned as it is)."""
    return x if isinstance(x, Tensor) else Tensor(x)


class Function:
    """One differentiable operation: ``forward`` and ``backward`` on raw arrays, side by side.

    Subclasses implement ``forward(*arrays) -> array or tuple of arrays`` and ``backward(*grad_outputs) ->
    grad or tuple of grads`` (one per input, ``None`` where an input needs none). ``forward`` saves on ``self``
    exactly what ``backward`` will need. ``self.needs_input_grad[i]`` says whether input ``i`` wants a gradient, so
    ``backward`` can skip work for frozen weights or integer inputs; it is set before ``forward`` runs, so an op
    whose saved state is large can skip keeping it when ``self.records`` is False (inference). Non-array settings
    (an axis, a shape) are constructor arguments: ``Sum(axis=1)(x)``.
    """

    inputs = ()  # per input: the leaf Tensor itself (its .grad is filled), or the Slot of the output it came from
    outputs = ()  # a weak reference to the Slot of each output
    needs_input_grad = ()
    records = False  # True while a graph is being recorded through this call
    # An output no gradient reached gets zeros of its shape in backward; a function with several outputs whose
    # backward takes None for those instead sets this False (nn/loss.py, LinearCrossEntropy: its unused logits output
    # would otherwise cost an array as large as the logits)
    fills_missing_grads = True

    def __call__(self, *inputs):
        inputs = [as_tensor(x) for x in inputs]
        self.records = _grad_mode.enabled and any(x.requires_grad for x in inputs)
        if self.records:
            self.needs_input_grad = tuple(x.requires_grad for x in inputs)
        ys = self.forward(*(x.data for x in inputs))
        single = not isinstance(ys, tuple)
        outputs = [Tensor(y) for y in ((ys,) if single else ys)]
        if self.records:
            self.inputs = [x if x.slot is None else x.slot for x in inputs]
            for o in outputs:
                o.slot = Slot(self)
                o.requires_grad = True
            # Held weakly: a slot keeps its creator alive (through the tensor, or the functions that consume it),
            # not the other way round, so an unused graph is freed by reference counting alone, without cycles.
            self.outputs = [weakref.ref(o.slot) for o in outputs]
            self.output_specs = [(o.shape, o.dtype) for o in outputs]
        return outputs[0] if single else tuple(outputs)

    def release(self):
        """Drop the inputs and saved arrays once ``backward`` has run, so their memory can be reused."""
        self.__dict__.clear()
        self.inputs = None  # marks the function as spent: a second backward through it is refused
