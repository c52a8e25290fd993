"""seq2seq: Hugging Face's EncoderDecoderModel in plain NumPy (CPU) and CuPy (GPU) arrays.

Reading order (each file builds only on those above it):

1. ``errors.py``        the exceptions bad input raises
2. ``backend.py``       the array module: NumPy or CuPy, ``get_array_module``, ``to_numpy``
3. ``autograd.py``      ``Tensor``, ``Function``, ``backward``, ``no_grad``
4. ``ops.py``           primitive differentiable ops (add, matmul, reshape, ...)
5. ``activations.py``   GELU (with a fast erf), ReLU, ... picked by ``hidden_act``
6. ``nn_ops.py``        fused ops with hand-derived backward: linear, layer norm, softmax, cross-entropy, embedding
7. ``gradcheck.py``     finite-difference gradient checks in float64
8. ``checkpoint.py``    safetensors files in and out (sharded, BF16/F16 widening, clear errors)
9. ``config.py``        configs with transformers' field names and defaults
10. ``weights.py``      ``ParamStore``/``ParamView``: checkpoint keys -> parameters, layer by layer
11. ``layers.py``       Linear, LayerNorm, Embedding, Dropout
12. ``attention.py``    masks and scaled dot-product attention
13. ``encoder.py``      the BERT encoder
14. ``cache.py``        the KV cache: appended self-attention keys/values, cross-attention ones computed once
15. ``bert_decoder.py`` the BERT decoder with cross-attention and a tied LM head
16. ``gpt2_decoder.py`` the GPT-2 decoder: pre-LN blocks, Conv1D weights, cross-attention
17. ``bart_decoder.py`` BART's decoder: post-LN, scaled embeddings, positions offset by 2
18. ``model.py``        ``EncoderDecoderModel``: forward, loss, from_pretrained, save_pretrained, decode steps
19. ``logits_process.py``, ``generate.py``, ``beam_search.py``  generation: processors, greedy/sampling, beams
20. ``tokenizer.py``    ``Tokenizer`` over the ``tokenizers`` library
21. ``optim.py``        SGD, AdamW, gradient clipping, the linear warm-up/decay schedule
22. ``data.py``         JSONL pairs -> token ids -> length-bucketed batches in a resumable order
23. ``evaluate.py``     validation loss and ROUGE of generated outputs
24. ``plot.py``         a small PNG line-plot writer (loss curves) on numpy + zlib
25. ``train.py``        the fine-tuning loop: checkpoints, exact resume, progress, evaluation
26. ``trim.py``         cutting a model and its tokenizer down to the vocabulary a corpus uses
27. ``__main__.py``     the command line: score, generate, finetune, trim-vocab
"""
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
