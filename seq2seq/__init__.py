"""seq2seq: Hugging Face's EncoderDecoderModel in plain NumPy (CPU) and CuPy (GPU) arrays.

Reading order (each file builds only on those above it):

1. ``errors.py``        the exceptions bad input raises
2. ``backend.py``       the array module: NumPy or CuPy, ``get_array_module``, ``to_numpy``
3. ``cpu.py``           OpenBLAS's threads and glibc's malloc, tuned from Python through ctypes
4. ``parallel.py``      elementwise work in cache-sized blocks of rows, on every CPU core
5. ``autograd.py``      ``Tensor``, ``Function``, ``backward``, ``no_grad``
6. ``ops.py``           primitive differentiable ops (add, matmul, reshape, ...)
7. ``activations.py``   GELU (with a fast erf), ReLU, ... picked by ``hidden_act``
8. ``nn_ops.py``        fused ops with hand-derived backward: linear, layer norm, softmax, cross-entropy, embedding
9. ``gradcheck.py``     finite-difference gradient checks in float64
10. ``checkpoint.py``   safetensors files in and out (sharded, BF16/F16 widening, clear errors)
11. ``config.py``       configs with transformers' field names and defaults
12. ``weights.py``      ``ParamStore``/``ParamView``: checkpoint keys -> parameters, layer by layer
13. ``layers.py``       Linear, LayerNorm, Embedding, Dropout
14. ``attention.py``    masks and scaled dot-product attention
15. ``encoder.py``      the BERT encoder
16. ``cache.py``        the KV cache: appended self-attention keys/values, cross-attention ones computed once
17. ``bert_decoder.py`` the BERT decoder with cross-attention and a tied LM head
18. ``gpt2_decoder.py`` the GPT-2 decoder: pre-LN blocks, Conv1D weights, cross-attention
19. ``bart_decoder.py`` BART's decoder: post-LN, scaled embeddings, positions offset by 2
20. ``model.py``        ``EncoderDecoderModel``: forward, loss, from_pretrained, save_pretrained, decode steps
21. ``logits_process.py``, ``generate.py``, ``beam_search.py``  generation: processors, greedy/sampling, beams
22. ``tokenizer.py``    ``Tokenizer`` over the ``tokenizers`` library
23. ``optim.py``        SGD, AdamW, gradient clipping, the linear warm-up/decay schedule
24. ``data.py``         JSONL pairs -> token ids -> length-bucketed batches in a resumable order
25. ``evaluate.py``     validation loss and ROUGE of generated outputs
26. ``plot.py``         a small PNG line-plot writer (loss curves) on numpy + zlib
27. ``console.py``      what a run shows and hears: the progress line, the loss plot, Ctrl-C and kill
28. ``train.py``        the fine-tuning loop: checkpoints, exact resume, evaluation
29. ``trim.py``         cutting a model and its tokenizer down to the vocabulary a corpus uses
30. ``__main__.py``     the command line: score, generate, finetune, trim-vocab
"""
import os

# Why this is set before anything imports NumPy: OpenBLAS reads it once, when NumPy loads it. By default its
# worker threads spin for ~2^28 cycles (a tenth of a second) after each matrix product, on the very cores that the
# elementwise work right after it (parallel.py) wants; 2^4 cycles lets them sleep at once. Measured on 2 cores:
# a training step 12% faster, matrix products no slower. A value the user set is kept; importing NumPy before this
# package leaves OpenBLAS's default in place.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from . import cpu  # noqa: E402 - after the line above, which must come before anything imports NumPy

cpu.keep_freed_memory()  # freed memory stays for the next step instead of being handed back (see cpu.py)

from .autograd import Function, Tensor, is_grad_enabled, no_grad
from .backend import get_array_module, has_cupy, to_numpy
from .config import BartConfig, BertConfig, EncoderDecoderConfig, GenerationConfig, GPT2Config
from .errors import (CheckpointError, CheckpointNotFoundError, ConfigError, GenerationError, InputError,
                     Seq2SeqError)
from .generate import GenerateOutput
from .model import EncoderDecoderModel, Seq2SeqOutput
from .tokenizer import Tokenizer

__version__ = "0.1.0"

__all__ = [
    "BartConfig", "BertConfig", "CheckpointError", "CheckpointNotFoundError", "ConfigError", "EncoderDecoderConfig",
    "EncoderDecoderModel", "Function", "GPT2Config", "GenerateOutput", "GenerationConfig", "GenerationError",
    "InputError", "Seq2SeqError",
    "Seq2SeqOutput", "Tensor", "Tokenizer", "get_array_module", "has_cupy", "is_grad_enabled", "no_grad",
    "to_numpy",
]
