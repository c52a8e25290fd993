"""Fine-tuning: optimizers, data, evaluation, the training loop, vocabulary trimming."""
