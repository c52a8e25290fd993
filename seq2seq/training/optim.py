"""Optimizers, gradient clipping and the learning-rate schedule: what turns ``p.grad`` into a better ``p.data``.

    loss.backward()                        # fills p.grad for every parameter
    clip_grad_norm_(params, 1.0)           # optional: bound the global gradient norm
    opt.step(); sched.step()               # update p.data in place, then move the learning rate along
    opt.zero_grad()                        # p.grad = None, ready for the next batch

Each piece repeats PyTorch's arithmetic in the same order, so float32 runs agree with ``torch.optim`` to rounding:
``SGD`` and ``AdamW`` are ``torch.optim.SGD`` (momentum, coupled weight decay) and ``torch.optim.AdamW``
(torch/optim/adam.py, ``_single_tensor_adam`` with ``decoupled_weight_decay=True``); ``clip_grad_norm_`` is
``torch.nn.utils.clip_grad_norm_``; ``LinearSchedule`` is transformers' ``get_linear_schedule_with_warmup``;
``param_groups`` builds the two groups of transformers' ``Trainer.create_optimizer``.

AdamW's update and the clipping's scaling have a fused CPU form (``fast/cpu/optim.py``: blocks in the cache, on
every core); AdamW's also a CUDA one (``fast/cuda/eager.py``: one kernel launch per parameter).

Updates happen in place (``p.data -= ...``), never by rebinding ``p.data``: arrays keep their memory layout (the
tied LM-head table is column-major on purpose, see ``layers.lm_head_layout``) and anything holding a reference
sees the new values. Gradients are only read, except by ``clip_grad_norm_``, which scales them in place as torch's
does. Parameters whose ``grad`` is None (unused in this forward pass) are skipped, as in torch.

Gradient accumulation needs nothing from the optimizer. ``backward`` *adds* into ``p.grad``, so running
``(loss_i * (1 / k)).backward()`` on k micro-batches before one ``opt.step()`` leaves the mean of their gradients
in ``p.grad``: the gradient of the combined batch whenever its loss is the mean of the micro-batch losses. (The
cross-entropy loss averages over the labelled tokens of its batch, so that holds exactly when every micro-batch
has the same number of tokens that are not -100; otherwise weight each loss by its share of the tokens instead.)
"""
import numpy as np

from ..core.autograd import Tensor
from ..core.backend import get_array_module
from ..fast import cpu as fast_cpu
from ..fast import cuda_enabled, cuda_forms
from ..fast.cpu import optim as fast_optim


def _copy_like(param, value, position, name):
    """A copy of a saved state array in the parameter's dtype, device and memory layout (a column-major table
    keeps column-major moments, so the CPU's blockwise update sees them as views in the same order as the table)."""
    xp = get_array_module(param)
    value = xp.asarray(value)
    if value.shape != param.shape:
        raise ValueError(f"saved optimizer state {name!r} of parameter {position} has shape {tuple(value.shape)}, "
                         f"the parameter {tuple(param.shape)}")
    out = xp.empty_like(param)
    out[...] = value
    return out


class Optimizer:
    """What SGD and AdamW share: parameter groups, per-parameter state, ``zero_grad`` and (de)serialisation.

    ``params`` is an iterable of Tensors, or a list of dicts ``{"params": [...], "lr": ..., ...}`` whose missing
    hyper-parameters come from the constructor's arguments (``torch.optim``'s "per-parameter options").
    """

    def __init__(self, params, defaults):
        if isinstance(params, Tensor):  # list() would iterate over its rows
            raise TypeError("params must be an iterable of Tensors or of group dicts, not a single Tensor")
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        self.param_groups = []
        for group in groups:
            members = group["params"]
            members = [members] if isinstance(members, Tensor) else list(members)
            self.param_groups.append({**defaults, **group, "params": members})
        ids = [id(p) for p in self._params()]
        if len(set(ids)) != len(ids):
            raise ValueError("some parameters appear more than once (in one group or in several)")
        self.state = {}  # id(parameter) -> {"step": int, moment arrays ...}, created on a parameter's first update

    def _params(self):
        """Every parameter, group after group: a parameter's position here is its key in ``state_dict``."""
        return [p for group in self.param_groups for p in group["params"]]

    def zero_grad(self):
        """Forget the gradients: ``p.grad = None`` (torch's default ``set_to_none=True``)."""
        for p in self._params():
            p.grad = None

    def state_dict(self):
        """``{"state": {position: {name: array or number}}, "param_groups": [{hyper-parameters, "params":
        [positions]}]}``: NumPy arrays (copies, on the host) and plain numbers, laid out as torch lays out its own.
        """
        position = {id(p): i for i, p in enumerate(self._params())}
        state = {position[id(p)]: {name: _host_copy(value, get_array_module(p))
                                   for name, value in self.state[id(p)].items()}
                 for p in self._params() if id(p) in self.state}
        groups = [{**{k: v for k, v in group.items() if k != "params"},
                   "params": [position[id(p)] for p in group["params"]]} for group in self.param_groups]
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore what ``state_dict`` returned (positions may be strings, tuples lists: it may have been
        through JSON). The optimizer must hold the same number of groups and parameters, in the same order."""
        saved_groups = state_dict["param_groups"]
        if [len(g["params"]) for g in saved_groups] != [len(g["params"]) for g in self.param_groups]:
            raise ValueError(f"the saved optimizer has groups of {[len(g['params']) for g in saved_groups]} "
                             f"parameters, this one {[len(g['params']) for g in self.param_groups]}")
        by_position = {}
        for group, saved in zip(self.param_groups, saved_groups):
            group.update({k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k != "params"})
            by_position.update(zip((int(i) for i in saved["params"]), group["params"]))
        self.state = {}
        for position, entry in state_dict["state"].items():
            p = by_position[int(position)]
            self.state[id(p)] = {name: int(value) if name == "step" else _copy_like(p.data, value, position, name)
                                 for name, value in entry.items()}

    def __repr__(self):
        groups = [{k: v for k, v in g.items() if k != "params"} | {"parameters": len(g["params"])}
                  for g in self.param_groups]
        return f"{type(self).__name__}({groups})"


class SGD(Optimizer):
    """Stochastic gradient descent, with optional momentum and (L2, coupled) weight decay, as ``torch.optim.SGD``:

        g = grad + weight_decay * p
        buf = g (first step), then buf = momentum * buf + g       # only when momentum != 0; then g = buf
        p = p - lr * g
    """

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0):
        _check_non_negative(lr=lr, momentum=momentum, weight_decay=weight_decay)
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    def step(self):
        for group in self.param_groups:
            lr, momentum, weight_decay = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if weight_decay != 0:
                    g = g + weight_decay * p.data  # a new array: p.grad stays as backward left it
                if momentum != 0:
                    state = self.state.setdefault(id(p), {})
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = g.copy()  # torch: clone(grad) on the first step
                    else:
                        buf = state["momentum_buffer"]
                        buf *= momentum
                        buf += g
                    g = state["momentum_buffer"]
                p.data -= lr * g


class AdamW(Optimizer):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019), step for step as ``torch.optim.AdamW``:

        p = p * (1 - lr * weight_decay)                        # decay first, apart from the gradient
        m = m + (1 - beta1) * (g - m)                          # torch: exp_avg.lerp_(grad, 1 - beta1)
        v = beta2 * v + (1 - beta2) * g * g
        denom = sqrt(v) / sqrt(1 - beta2**t) + eps             # bias corrections in Python floats (float64)
        p = p - (lr / (1 - beta1**t)) * m / denom

    All array arithmetic happens in the parameter's dtype; the moments ``exp_avg`` and ``exp_avg_sq`` are kept
    per parameter with the step count ``step``.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        _check_non_negative(lr=lr, eps=eps, weight_decay=weight_decay)
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must lie in [0, 1), got {betas}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay})

    def step(self):
        for group in self.param_groups:
            lr, (beta1, beta2), eps, weight_decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                xp, g = get_array_module(p), p.grad
                state = self.state.setdefault(id(p), {})
                if not state:
                    state.update(step=0, exp_avg=xp.zeros_like(p.data), exp_avg_sq=xp.zeros_like(p.data))
                m, v = state["exp_avg"], state["exp_avg_sq"]
                state["step"] += 1
                t = state["step"]

                bias_correction1 = 1 - beta1 ** t
                bias_correction2 = 1 - beta2 ** t
                hyper = {"lr": lr, "beta1": beta1, "beta2": beta2, "eps": eps, "weight_decay": weight_decay,
                         "step_size": lr / bias_correction1, "bias_correction2": bias_correction2}
                if fast_cpu.enabled(xp):  # the same arithmetic in blocks, on every core (fast/cpu/optim.py)
                    fast_optim.adamw_update(p.data, g, m, v, **hyper)
                elif cuda_enabled(xp, p.dtype):  # one kernel launch per parameter (fast/cuda/eager.py)
                    cuda_forms().adamw_update(p.data, g, m, v, **hyper)
                else:
                    _adamw_update(p.data, g, m, v, **hyper)


def _adamw_update(p, g, m, v, *, lr, beta1, beta2, eps, weight_decay, step_size, bias_correction2):
    """torch.optim.AdamW's arithmetic, in torch's order, in place on the parameter ``p`` and its moments."""
    if weight_decay != 0:
        p *= 1 - lr * weight_decay
    m += (1 - beta1) * (g - m)
    v *= beta2
    v += (1 - beta2) * g * g
    denom = get_array_module(p).sqrt(v) / bias_correction2 ** 0.5 + eps
    p -= step_size * m / denom


def clip_grad_norm_(params, max_norm):
    """Scale all gradients together so that their global 2-norm is at most ``max_norm``; return the norm before.

    As ``torch.nn.utils.clip_grad_norm_``: the norm of the per-parameter norms (each in the gradient's dtype),
    and the factor ``max_norm / (norm + 1e-6)`` applied in place when it is below 1. A NaN or infinite norm is
    returned as it is and spreads into the gradients (NaN everywhere, or 0 and NaN), as torch's does by default.
    """
    params = [params] if isinstance(params, Tensor) else params
    params = [p for p in params if p.grad is not None]
    if not params:
        return 0.0
    xp, grads = get_array_module(params[0]), [p.grad for p in params]
    total = xp.linalg.norm(xp.stack([xp.linalg.norm(g) for g in grads]))  # norm of the norms, a 0-d array
    clip_coef = max_norm / (total + 1e-6)
    if not clip_coef >= 1:  # below 1, or NaN. (torch always multiplies by min(clip_coef, 1); by 1 is a no-op)
        for g in grads:
            if fast_cpu.enabled(xp):
                fast_optim.scale_in_place(g, clip_coef)  # in blocks on every core
            else:
                g *= clip_coef
    return float(total)


class LinearSchedule:
    """Linear warm-up from 0 to each group's initial lr over ``warmup_steps``, then linear decay to 0 at
    ``total_steps``: transformers' ``get_linear_schedule_with_warmup`` (a torch ``LambdaLR``).

    The lr of step ``s`` (the number of ``sched.step()`` calls so far) is ``initial_lr * factor(s)``. Creating
    the schedule applies ``factor(0)`` (0 with a warm-up); call ``sched.step()`` after each ``opt.step()``. The
    initial lr is remembered in each group as ``"initial_lr"``, as torch does, so it travels with the optimizer.
    """

    def __init__(self, optimizer, warmup_steps, total_steps):
        if warmup_steps < 0 or total_steps < 0:
            raise ValueError(f"warmup_steps and total_steps must be >= 0, got {warmup_steps} and {total_steps}")
        self.optimizer, self.warmup_steps, self.total_steps = optimizer, warmup_steps, total_steps
        self.base_lrs = [group.setdefault("initial_lr", group["lr"]) for group in optimizer.param_groups]
        self.last_step = 0
        self._apply()

    def factor(self, step):
        """The lr multiplier after ``step`` optimizer steps."""
        if step < self.warmup_steps:
            return float(step) / float(max(1, self.warmup_steps))
        return max(0.0, float(self.total_steps - step) / float(max(1, self.total_steps - self.warmup_steps)))

    def step(self):
        self.last_step += 1
        self._apply()

    def get_last_lr(self):
        """The learning rate of each group, as the next ``opt.step()`` will use it."""
        return [group["lr"] for group in self.optimizer.param_groups]

    def _apply(self):
        for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base_lr * self.factor(self.last_step)

    def state_dict(self):
        return {"last_step": self.last_step, "base_lrs": list(self.base_lrs),
                "warmup_steps": self.warmup_steps, "total_steps": self.total_steps}

    def load_state_dict(self, state_dict):
        """Restore the position in the schedule (and set the groups' lr to match it)."""
        self.last_step = int(state_dict["last_step"])
        self.base_lrs = [float(lr) for lr in state_dict["base_lrs"]]
        self.warmup_steps, self.total_steps = int(state_dict["warmup_steps"]), int(state_dict["total_steps"])
        self._apply()


def param_groups(model_or_named_params, weight_decay):
    """Two groups, as transformers' ``Trainer`` builds them: matrices decay, biases and LayerNorm weights do not.

    ``[{"params": [...matrices...], "weight_decay": weight_decay}, {"params": [...vectors...], "weight_decay": 0.0}]``
    from a model (anything with ``named_parameters()``) or an iterable of ``(name, Tensor)`` pairs.

    Why the rule is "decay exactly the parameters with 2 or more dimensions": the Trainer exempts every parameter
    of an ``nn.LayerNorm`` and every name containing "bias" (or a "norm" pattern); it decays all the rest. In the
    models here (BERT, GPT-2, BART and the projection between encoder and decoder) the 1-D parameters are
    precisely the biases and the LayerNorm weights and biases, and every other parameter is a matrix: the linear
    weights and the word, position and token-type embedding tables (which the Trainer decays too). Dimensions
    say it without a list of names that a new architecture could silently miss.
    """
    named = model_or_named_params
    named = named.named_parameters() if hasattr(named, "named_parameters") else named
    decay, no_decay = [], []
    for _, p in named:
        (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _check_non_negative(**values):
    for name, value in values.items():
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")


def _host_copy(value, xp):
    """A state entry for ``state_dict``: arrays as NumPy copies (never the live array), numbers as they are."""
    if isinstance(value, (int, float)):
        return value
    return value.copy() if xp is np else xp.asnumpy(value)
