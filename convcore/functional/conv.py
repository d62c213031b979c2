"""Convolution (1-D and 2-D), forward and backward."""


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    raise NotImplementedError


def conv2d_backward(dy, x, w, stride=1, padding=0, dilation=1, groups=1, input_grad=True, bias_grad=True):
    raise NotImplementedError


def conv1d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    raise NotImplementedError


def conv1d_backward(dy, x, w, stride=1, padding=0, dilation=1, groups=1, input_grad=True, bias_grad=True):
    raise NotImplementedError
