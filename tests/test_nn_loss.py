"""Losses: CrossEntropyLoss and MSELoss values (stable for large logits), float64 gradient checks, torch parity."""
import numpy as np
import pytest

from convcore import nn
from gradcheck import numerical_grad, relative_error


def _log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def test_cross_entropy_value_and_stability(rng):
    logits = rng.standard_normal((5, 4))
    labels = np.array([0, 3, 1, 1, 2])
    loss = nn.CrossEntropyLoss()
    expected = -_log_softmax(logits)[np.arange(5), labels].mean()
    assert loss(logits, labels) == pytest.approx(expected, rel=1e-12)
    big = np.array([[1000.0, -1000.0, 0.0], [-1000.0, 1000.0, 999.0]], np.float32)
    value = loss(big, np.array([1, 2]))
    assert value == pytest.approx((2000.0 + 1.0 + np.log1p(np.exp(-1.0))) / 2, rel=1e-5)
    assert np.isfinite(loss.backward()).all()
    # the same logits far from zero: the same loss, within float32 rounding of the differences (log(sum) + max -
    # x[label] in float32 rounded the large max away: 1.4375 and 1.0 at offsets 1e6 and 1e7 for 1.4076)
    expected = -_log_softmax(np.array([[0.0, 1.0, -1.0]]))[0, 0]
    for offset in (1e4, 1e6, 1e7):
        shifted = (np.array([[0.0, 1.0, -1.0]]) + offset).astype(np.float32)
        assert loss(shifted, np.array([0])) == pytest.approx(expected, rel=1e-6)


def test_softmax_rows_and_empty_rows(rng):
    import convcore as cc
    z = rng.standard_normal((3, 5)).astype(np.float32)
    np.testing.assert_allclose(cc.functional.softmax(z), np.exp(_log_softmax(z)), rtol=1e-6)
    for shape in ((2, 0), (0,), (0, 4)):  # rows of no classes, or no rows: empty, as PyTorch
        assert cc.functional.softmax(np.zeros(shape, np.float32)).shape == shape


def test_cross_entropy_gradient_float64(rng):
    logits = rng.standard_normal((4, 6))
    labels = rng.integers(0, 6, 4)
    loss = nn.CrossEntropyLoss()
    loss(logits, labels)
    grad = loss.backward(grad_output=0.5)
    num = numerical_grad(lambda z: np.array(0.5 * nn.CrossEntropyLoss()(z, labels)), logits.copy(), np.array(1.0))
    assert relative_error(grad, num) < 1e-7


def test_mse_value_and_gradient_float64(rng):
    out, target = rng.standard_normal((3, 5)), rng.standard_normal((3, 5))
    loss = nn.MSELoss()
    assert loss(out, target) == pytest.approx(np.mean((out - target) ** 2), rel=1e-12)
    grad = loss.backward()
    num = numerical_grad(lambda o: np.array(nn.MSELoss()(o, target)), out.copy(), np.array(1.0))
    assert relative_error(grad, num) < 1e-7


def test_losses_match_torch(rng):
    torch = pytest.importorskip("torch")
    logits = rng.standard_normal((6, 5)).astype(np.float32)
    labels = rng.integers(0, 5, 6)
    tl = torch.from_numpy(logits).requires_grad_(True)
    tvalue = torch.nn.functional.cross_entropy(tl, torch.from_numpy(labels))
    tvalue.backward()
    ce = nn.CrossEntropyLoss()
    assert ce(logits, labels) == pytest.approx(float(tvalue.detach()), rel=1e-6)
    assert relative_error(ce.backward(), tl.grad.numpy()) < 1e-5
    target = rng.standard_normal((6, 5)).astype(np.float32)
    tl.grad = None
    tvalue = torch.nn.functional.mse_loss(tl, torch.from_numpy(target))
    tvalue.backward()
    mse = nn.MSELoss()
    assert mse(logits, target) == pytest.approx(float(tvalue.detach()), rel=1e-6)
    assert relative_error(mse.backward(), tl.grad.numpy()) < 1e-5


def test_loss_errors(rng):
    with pytest.raises(RuntimeError, match=r"CrossEntropyLoss.backward needs a call loss\(logits, labels\) first"):
        nn.CrossEntropyLoss().backward()
    with pytest.raises(RuntimeError, match="MSELoss.backward needs a call"):
        nn.MSELoss().backward()
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        nn.CrossEntropyLoss()(np.zeros((2, 3), np.float32), np.array([0, 3]))
    with pytest.raises(ValueError, match=r"target must have the output's shape \(2, 3\), got \(3, 2\)"):
        nn.MSELoss()(np.zeros((2, 3), np.float32), np.zeros((3, 2), np.float32))
    with pytest.raises(TypeError, match="target has dtype float64 but must match"):
        nn.MSELoss()(np.zeros((2, 3), np.float32), np.zeros((2, 3)))
    from convcore import functional as F
    logits, labels = np.zeros((2, 3), np.float32), np.array([0, 1])
    for bad in (True, float("nan"), float("inf"), "1"):
        with pytest.raises(TypeError, match=f"grad_output must be a finite real number, got {bad!r}"):
            F.cross_entropy_backward(logits, labels, bad)
    loss = nn.CrossEntropyLoss()
    loss(logits, labels)
    with pytest.raises(TypeError, match="grad_output must be a finite real number, got True"):
        loss.backward(True)
    np.testing.assert_allclose(F.cross_entropy_backward(logits, labels, np.float32(2.0)),
                               [[-2 / 3, 1 / 3, 1 / 3], [1 / 3, -2 / 3, 1 / 3]], rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("labels, found", [([0, 3], 3), ([-1, 2], -1), ([-2, 7], -2),
                                           (np.array([1, 2**64 - 1], np.uint64), 2**64 - 1),
                                           (np.array([2**63, 0], np.uint64), 2**63)])
def test_cross_entropy_refuses_labels_outside_the_classes(dtype, labels, found):
    from convcore import functional as F

    logits, labels = np.zeros((2, 3), dtype), np.asarray(labels)
    message = rf"labels must be in \[0, 3\) \(number of classes\), found {found}$"
    with pytest.raises(ValueError, match=message):
        F.cross_entropy(logits, labels)
    with pytest.raises(ValueError, match=message):
        F.cross_entropy_backward(logits, labels)
    with pytest.raises(ValueError, match=message):
        nn.CrossEntropyLoss()(logits, labels)


def test_cross_entropy_loss_backward_uses_the_forward_probabilities(rng):
    """The module keeps the forward's softmax; its gradient equals the functional one (which recomputes it)."""
    from convcore import functional as F

    logits, labels = rng.standard_normal((5, 4)).astype(np.float32), np.array([0, 3, 1, 1, 2])
    loss = nn.CrossEntropyLoss()
    assert loss(logits, labels) == F.cross_entropy(logits, labels)
    np.testing.assert_array_equal(loss.backward(0.5), F.cross_entropy_backward(logits, labels, 0.5))
