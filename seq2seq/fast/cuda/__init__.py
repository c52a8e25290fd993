"""CUDA kernels for the CuPy backend: ``kernels.py`` finds and compiles the ``.cu`` files in the repository's
``kernels/`` folder and runs launches; ``plans.py`` works out each launch (checks, outputs, grid, block, arguments)
in plain Python; ``reference.py`` says in NumPy what each kernel computes, with the same buffer layouts (the parity
tests compare the two).

Nothing here is imported when the package is: an op that has a kernel imports ``kernels`` inside its CuPy branch
(``if xp is not np and kernels.available("layer_norm"): ...``), so NumPy-only installs never touch CUDA.
"""
