"""convcore.summary: the lecture's figures (32x32x3 with ten 5x5 filters; VGG-16 per-image activations), composite
blocks, 1-D networks, argument errors."""
import numpy as np
import pytest

import convcore as cc


def test_summary_lecture_example(capsys):
    s = cc.summary(cc.nn.Sequential(cc.nn.Conv2d(3, 10, 5, padding=2)), (3, 32, 32))
    row = s.rows[0]
    assert row.output_shape == (10, 32, 32) and row.params == 760
    assert row.macs == 10 * 32 * 32 * 3 * 25
    assert "760" in capsys.readouterr().out



def test_summary_vgg16_figures():
    s = cc.summary(cc.models.vgg16(), (3, 224, 224), print_table=False)
    assert s.total_params == 138_357_544
    assert s.total_activations == 15_262_696          # see convcore/summary.py for the lecture's 24M
    assert s.total_macs == 15_470_264_320
    convs = [r for r in s.rows if r.kind == "Conv2d"]
    assert convs[0].output_shape == (64, 224, 224) and convs[-1].output_shape == (512, 14, 14)
    assert [r.output_shape for r in s.rows if r.kind == "Linear"] == [(4096,), (4096,), (1000,)]



def test_summary_counts_composite_block_outputs():
    s = cc.summary(cc.models.resnet20(), (3, 32, 32), print_table=False)
    blocks = [r for r in s.rows if r.kind == "BasicBlock"]
    assert [r.name for r in blocks[:2]] == ["layer1.0", "layer1.1"] and len(blocks) == 9
    assert blocks[-1].output_shape == (64, 8, 8) and blocks[-1].activations == 64 * 8 * 8
    # input + conv1/bn1 + per block (conv1, bn1, conv2, bn2, sum) + avgpool + fc
    assert s.total_activations == 3072 + 2 * 16384 + 3 * 5 * (16384 + 8192 + 4096) + 64 + 10
    assert s.total_activation_bytes == 4 * s.total_activations
    g = cc.summary(cc.models.googlenet(), (3, 224, 224), print_table=False)
    assert [r.output_shape for r in g.rows if r.name == "inception3a"] == [(256, 28, 28)]
    lenet = cc.summary(cc.models.lenet5(), (1, 28, 28), print_table=False)
    assert [r.kind for r in lenet.rows].count("ReLU") == 4 and len(lenet.rows) == 12



def test_summary_of_a_1d_network_and_float64_bytes():
    model = cc.nn.Sequential(cc.nn.Conv1d(2, 4, 3, padding=1), cc.nn.ReLU(), cc.nn.MaxPool1d(2), cc.nn.Flatten(),
                             cc.nn.Linear(4 * 8, 5)).to(np.float64)
    s = cc.summary(model, (2, 16), print_table=False)
    assert [r.output_shape for r in s.rows] == [(4, 16), (4, 16), (4, 8), (32,), (5,)]
    assert [r.macs for r in s.rows] == [4 * 16 * 2 * 3, 0, 0, 0, 32 * 5]
    assert s.total_params == 4 * 2 * 3 + 4 + 32 * 5 + 5
    assert s.total_activations == 2 * 16 + 4 * 16 + 4 * 8 + 5 and s.total_activation_bytes == 8 * s.total_activations



def test_summary_argument_errors():
    with pytest.raises(TypeError, match="model must be a convcore.nn.Module"):
        cc.summary("vgg16", (3, 224, 224))
    with pytest.raises(ValueError, match="input_shape must be"):
        cc.summary(cc.models.lenet5(), (1, 1, 28, 28))
    with pytest.raises(TypeError, match="print_table must be a bool, got 'no'"):  # printed the table
        cc.summary(cc.models.lenet5(), (1, 28, 28), print_table="no")


def test_summary_restores_each_modules_own_mode():
    model = cc.nn.Sequential(cc.nn.Linear(3, 4, rng=0), cc.nn.BatchNorm1d(4), cc.nn.ReLU())
    model[1].eval()
    s = cc.summary(model, (3,), print_table=False)
    assert [r.output_shape for r in s.rows] == [(4,), (4,), (4,)]
    assert [m.training for m in model.modules()] == [True, True, False, True]


def test_summary_counts_a_shared_parameter_once():
    first, second = cc.nn.Linear(4, 4), cc.nn.Linear(4, 4)
    second.weight = first.weight  # tied: model.parameters() lists it once
    model = cc.nn.Sequential(first, cc.nn.ReLU(), second)
    result = cc.summary(model, (4,), print_table=False)
    assert result.total_params == sum(p.data.size for p in model.parameters()) == 24  # was 40
    assert [r.params for r in result.rows] == [20, 0, 4]  # the shared weight in its first user's row
