"""The engine's foundation: errors, the array module, the autograd, its primitive ops, gradient checks."""
