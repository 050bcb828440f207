"""Arrays in, arrays out: the kernels as plain functions on numpy arrays (one module per family)."""
from .conv import conv2d, conv2d_algorithm, conv2d_backward
from .attention import SDPASaved, scaled_dot_product_attention, scaled_dot_product_attention_backward
from .lstm import LSTMGrads, LSTMSaved, lstm, lstm_backward, lstm_cell, lstm_cell_backward
from . import elementwise, optim
from .elementwise import (cross_entropy, gelu, layer_norm, layer_norm_backward, leaky_relu, log_softmax,
                          log_softmax_backward, relu, sigmoid, softmax, softmax_backward, tanh)
from .matmul import matmul
from .pool import (
    adaptive_avg_pool2d,
    adaptive_avg_pool2d_backward,
    avg_pool2d,
    avg_pool2d_backward,
    max_pool2d,
    max_pool2d_backward,
)

__all__ = [
    "matmul",
    "conv2d", "conv2d_backward", "conv2d_algorithm",
    "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
    "adaptive_avg_pool2d", "adaptive_avg_pool2d_backward",
    "lstm", "lstm_backward", "lstm_cell", "lstm_cell_backward", "LSTMSaved", "LSTMGrads",
    "scaled_dot_product_attention", "scaled_dot_product_attention_backward", "SDPASaved",
    "elementwise", "optim", "relu", "sigmoid", "tanh", "gelu", "leaky_relu", "softmax", "log_softmax",
    "softmax_backward", "log_softmax_backward", "cross_entropy", "layer_norm", "layer_norm_backward",
]
