"""layerforge.nn: torch.nn's Module API on layerforge Tensors and kernels."""
from . import functional, init
from .conv import AdaptiveAvgPool2d, AvgPool2d, Conv2d, MaxPool2d
from .layers import (BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, Dropout, Embedding, Flatten, GELU, Identity,
                     LayerNorm, LeakyReLU, Linear, LogSoftmax, MSELoss, NLLLoss, ReLU, Sigmoid, Softmax, Tanh)
from .module import Module, ModuleList, Parameter, Sequential
from .rnn import LSTM, LSTMCell
from .transformer import MultiheadAttention, TransformerEncoder, TransformerEncoderLayer

__all__ = ["functional", "init", "Module", "Sequential", "ModuleList", "Parameter", "Linear", "Flatten", "ReLU",
           "LeakyReLU", "GELU", "Sigmoid", "Tanh", "Softmax", "LogSoftmax", "Dropout", "LayerNorm", "Embedding",
           "Identity", "CrossEntropyLoss", "NLLLoss", "MSELoss", "BCELoss", "BCEWithLogitsLoss"]
__all__ += ["Conv2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d"]
__all__ += ["LSTM", "LSTMCell", "MultiheadAttention", "TransformerEncoderLayer", "TransformerEncoder"]
