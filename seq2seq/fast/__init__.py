"""Fast forms of the ops in ``nn/``, in rooms of their own: ``cpu/`` (fused NumPy ops, BLAS threads, malloc)
and ``cuda/`` (CUDA kernels through CuPy, with NumPy references; imported only where CuPy is in use).

Each fast form computes what the plain form in ``nn/`` computes, and is chosen there by one explicit branch;
tests check it against the plain form. Nothing here imports anything above ``core/``. Both rooms also hold a fused
decoder step of generation (``cpu/decode_step.py``, ``cuda/decode_step.py``), which read the model's weights
through ``decoder_weights.py``."""
