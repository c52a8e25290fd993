"""CUDA kernels for the CuPy backend: ``kernels.py`` finds and compiles the ``.cu`` files in the repository's
``kernels/`` folder and runs launches; ``plans.py`` works out each launch (checks, outputs, grid, block, arguments)
in plain Python; ``reference.py`` says in NumPy what each kernel computes, with the same buffer layouts (the parity
tests compare the two).

``eager.py`` holds the fused CUDA forms of nn/'s ops for a CuPy model's eager path (activations, LayerNorm,
attention's softmax and the cross-entropy, forward and backward; dropout's masks; AdamW; their launches planned in
``eager_plans.py``); ``decode_step.py``, ``step_layers.py`` and ``graphs.py`` the decode step of generation as
kernel launches, captured as CUDA graphs; ``cublas.py`` the products inside a capture.

Nothing here is imported when the package is: an op that has a CUDA form asks ``fast.cuda_enabled(xp, dtype)``
(False at once for NumPy arrays) and imports ``eager`` inside that branch, so NumPy-only installs never touch CUDA.
"""
