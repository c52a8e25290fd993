"""seq2seq: Hugging Face's EncoderDecoderModel in plain NumPy (CPU) and CuPy (GPU) arrays.

Reading order: the subpackages bottom-up, each file building only on those above it (no import runs upward;
tests/test_sizes.py checks it).

Importing the package changes nothing in the process (no environment variable, no library setting): a program
that trains or generates on the CPU calls ``seq2seq.tune_cpu()`` once, at its start, as the command line and the
``Trainer`` do (see ``fast/cpu/native.py``).

``core/``        the engine's foundation
    ``errors.py``      the exceptions bad input raises
    ``backend.py``     the array module: NumPy or CuPy, ``get_array_module``, ``to_numpy``
    ``autograd.py``    ``Tensor``, ``Function``, ``backward``, ``no_grad``
    ``ops.py``         primitive differentiable ops (add, matmul, reshape, ...)
    ``gradcheck.py``   finite-difference gradient checks in float64
    ``special.py``     ``erf`` (exact GELU needs it; NumPy lacks it)
    ``config.py``      configs: JSON fields as attributes, with transformers' names
    ``inputs.py``      the boundary: ids, masks and labels checked once where they enter
    ``distributed.py`` processes together: allreduce/broadcast over MPI (NCCL for CuPy), one process by default
``fast/``        fast forms of nn/'s ops in rooms of their own (read after nn/: it needs only core/)
    ``cpu/native.py``  OpenBLAS's threads and glibc's malloc, tuned through ctypes when a program calls ``tune()``
    ``cpu/parallel.py`` elementwise work in cache-sized blocks of rows, on every CPU core (``cpu/workers.py``: the
                       threads it wakes)
    ``cpu/thin.py``    products of a few rows (a decode step's) in column chunks of the weight, on every core
                       (one row: each weight whole, on the calling thread, but for one wider than the cache)
    ``cpu/linear.py``, ``cpu/layer_norm.py``, ``cpu/cross_entropy.py``, ``cpu/gelu.py``, ``cpu/attention.py``,
    ``cpu/optim.py``   the fused forms of nn/'s linear, layer norm, cross-entropy, erf, GELU and attention, and of
                       AdamW's update
    ``decoder_weights.py`` a decoder's weights as a decode step reads them, for each family (views, no copies)
    ``cpu/decode_step.py`` a decoder step of generation as those fused forms called on arrays, over buffers made
                       once: the eager step's logits without the autograd (its layers: ``cpu/step_layers.py``)
    ``cuda/kernels.py`` the CUDA kernels of ``kernels/*.cu``, compiled through CuPy and launched (imported only in
                       a CuPy branch); ``cuda/plans.py`` each launch worked out in plain Python;
                       ``cuda/reference.py`` what each computes, in NumPy; ``cuda/eager.py`` the CUDA forms of
                       the activations, LayerNorm, attention's softmax, the cross-entropy (forward and backward),
                       dropout's masks and AdamW, for a CuPy model's encoder and training (``cuda/eager_plans.py``)
    ``cuda/cublas.py`` row-major products through a cuBLAS handle of our own (ctypes), which a CUDA graph can
                       capture; ``cuda/decode_step.py`` a decoder step of generation as launches and products over
                       static buffers (its BERT/BART and GPT-2 layers: ``cuda/step_layers.py``); ``cuda/graphs.py``
                       that step captured once per (rows, length bucket), replayed
``nn/``          the network's parts
    ``weights.py``     ``ParamStore``/``ParamView``: checkpoint keys -> parameters, layer by layer
    ``functional.py``  ops with hand-derived backward: linear, layer norm, softmax, embedding, dropout
    ``loss.py``        the cross-entropy loss, and the LM head's projection with it as one op (backward by slices)
    ``activations.py`` GELU, ReLU, ... picked by ``hidden_act``
    ``source_rows.py`` several decoder rows per source: their queries grouped over one copy of its keys/values
    ``packing.py``     a padded batch's real tokens as rows: the encoder without the padding's work
    ``attention.py``   masks and scaled dot-product attention
    ``record.py``      what layers report when asked: attention probabilities, hidden states (output_attentions)
    ``layers.py``      Linear, LayerNorm, Embedding, Dropout
    ``cache.py``       the KV cache: appended self-attention keys/values, cross-attention ones once per source
``generation/``  decoding, over a model's ``start_decoding`` and ``decode_step``
    ``config.py``      ``GenerationConfig`` (generation_config.json)
    ``logits_process.py``, ``sequence_bias.py``, ``warpers.py``, ``processors.py``  the score rules and their order
    ``stopping.py``    max_time and stop_strings; ``sampling.py``  argmax or a draw; ``sources.py``  encoder_outputs
    ``kernel_path.py`` ``generate(cuda_graph=...)``: the loops over fast/cuda's graphed kernel step, or the eager one
    ``beam_search.py``, ``generate.py``  beams (and beam sampling), greedy/sampling loops
``models/``      the models
    ``config.py``      model configs with transformers' field names and defaults
    ``checkpoint.py``  safetensors files in and out (sharded, BF16/F16 widening, clear errors)
    ``hub.py``         Hub ids (``"org/name"``) -> local folders, through huggingface_hub and its cache
    ``tokenizer.py``   ``Tokenizer`` over the ``tokenizers`` library
    ``truecase.py``    ``Truecaser``: an uncased model's output given the capitals and spacing of its source and of
                       the training targets (a model folder's truecase.json)
    ``encoder.py``     the BERT encoder
    ``bert_decoder.py``, ``gpt2_decoder.py``, ``bart_decoder.py``  the decoders with cross-attention
    ``model.py``       ``EncoderDecoderModel``: forward, loss, from_pretrained, save_pretrained, decode steps
``training/``    fine-tuning
    ``optim.py``       SGD, AdamW, gradient clipping, the linear warm-up/decay schedule
    ``data.py``        JSONL pairs -> token ids -> length-bucketed batches in a resumable order
    ``data_parallel.py`` each rank's rows of a batch, their dropout masks, one allreduce of all gradients
    ``evaluate.py``    validation loss and ROUGE of generated outputs
    ``plot.py``, ``console.py``  the loss plot, tqdm's progress bars, Ctrl-C and kill
    ``train.py``       the fine-tuning loop: checkpoints, exact resume, evaluation
    ``trim.py``        cutting a model and its tokenizer down to the vocabulary a corpus uses
``cli/``         the command line (``main.py``): summarize, score, generate (``inference.py``), warm-start,
                 finetune and trim-vocab, each in its own module
"""
from . import distributed, optim  # seq2seq.optim and seq2seq.distributed, reachable after `import seq2seq`
from .core.autograd import Function, Tensor, is_grad_enabled, no_grad
from .core.backend import get_array_module, has_cupy, to_numpy
from .core.errors import (CheckpointError, CheckpointNotFoundError, ConfigError, GenerationError, InputError,
                          Seq2SeqError)
from .fast.cpu.native import tune as tune_cpu
from .generation.config import GenerationConfig
from .generation.generate import GenerateOutput
from .models.config import BartConfig, BertConfig, EncoderDecoderConfig, GPT2Config
from .models.model import EncoderDecoderModel, Seq2SeqOutput
from .models.tokenizer import Tokenizer

__version__ = "0.1.0"

__all__ = [
    "BartConfig", "BertConfig", "CheckpointError", "CheckpointNotFoundError", "ConfigError", "EncoderDecoderConfig",
    "EncoderDecoderModel", "Function", "GPT2Config", "GenerateOutput", "GenerationConfig", "GenerationError",
    "InputError", "Seq2SeqError", "Seq2SeqOutput", "Tensor", "Tokenizer", "get_array_module", "has_cupy",
    "is_grad_enabled", "no_grad", "optim", "distributed", "to_numpy", "tune_cpu",
]
