"""Max and average pooling (1-D and 2-D), forward and backward."""


def max_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, return_indices=False):
    raise NotImplementedError


def max_pool2d_backward(dy, indices, input_shape, kernel_size, stride=None, padding=0, ceil_mode=False):
    raise NotImplementedError


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    raise NotImplementedError


def avg_pool2d_backward(dy, input_shape, kernel_size, stride=None, padding=0, ceil_mode=False,
                        count_include_pad=True):
    raise NotImplementedError


def max_pool1d(x, kernel_size, stride=None, padding=0, ceil_mode=False, return_indices=False):
    raise NotImplementedError


def max_pool1d_backward(dy, indices, input_shape, kernel_size, stride=None, padding=0, ceil_mode=False):
    raise NotImplementedError


def avg_pool1d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    raise NotImplementedError


def avg_pool1d_backward(dy, input_shape, kernel_size, stride=None, padding=0, ceil_mode=False,
                        count_include_pad=True):
    raise NotImplementedError
