"""Arrays in, arrays out: the kernels as plain functions on numpy arrays (one module per family)."""
from .attention import SDPASaved, scaled_dot_product_attention, scaled_dot_product_attention_backward
from .lstm import LSTMGrads, LSTMSaved, lstm, lstm_backward, lstm_cell, lstm_cell_backward
from .matmul import matmul

__all__ = [
    "matmul",
    "lstm", "lstm_backward", "lstm_cell", "lstm_cell_backward", "LSTMSaved", "LSTMGrads",
    "scaled_dot_product_attention", "scaled_dot_product_attention_backward", "SDPASaved",
]
