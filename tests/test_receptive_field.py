"""Receptive fields and halos against hand-computed values."""
from __future__ import annotations

import pytest

from testdata.synthetic_models import (Conv, DepthwiseConv, Mean, ModelSpec, Pad, Pool,
                                       build_int8_graph)
from tflite_quantmcu.errors import UnsupportedOpError
from tflite_quantmcu.patches.receptive_field import (AxisWindow, Interval, Region, SameFit,
                                                     pad_amounts, receptive_field,
                                                     same_axis_fit, same_pad_before,
                                                     spatial_map, unsupported_reason)


def test_window_needs_stride_and_kernel_extent():
    # outputs 0..3 of a 3-wide, stride-2 window read inputs 0..8
    assert AxisWindow(kernel=3, stride=2).needed(Interval(0, 4)) == Interval(0, 9)
    # SAME padding 1 before: the first output starts one pixel before the image
    assert AxisWindow(kernel=3, stride=1, pad_before=1).needed(Interval(0, 4)) == Interval(-1, 5)


def test_dilation_widens_the_window():
    window = AxisWindow(kernel=3, stride=1, dilation=2, pad_before=2)
    assert window.extent == 5
    assert window.needed(Interval(2, 3)) == Interval(0, 5)


def test_halo_is_what_lies_beyond_the_stride_aligned_part():
    assert AxisWindow(kernel=3, stride=1, pad_before=1).halo(Interval(4, 8)) == (1, 1)
    assert AxisWindow(kernel=7, stride=2, pad_before=3).halo(Interval(2, 5)) == (3, 2)
    assert AxisWindow(kernel=1, stride=2).halo(Interval(0, 3)) == (0, -1)


def test_same_padding_puts_the_smaller_half_first():
    assert same_pad_before(in_size=22, out_size=11, stride=2, extent=3) == 0   # total 1
    assert same_pad_before(in_size=7, out_size=7, stride=1, extent=5) == 2     # total 4
    assert same_pad_before(in_size=9, out_size=5, stride=2, extent=4) == 1     # total 3


def test_pad_amounts_are_the_parts_outside_the_axis():
    assert pad_amounts(needed=Interval(-2, 5), size=10) == (2, 0)
    assert pad_amounts(needed=Interval(7, 12), size=10) == (0, 2)
    assert pad_amounts(needed=Interval(3, 5), size=10) == (0, 0)


def _graph(*layers, shape=(20, 16, 3)):
    return build_int8_graph(spec=ModelSpec(input_shape=shape, layers=tuple(layers), seed=3))


def test_chain_receptive_field_hand_computed():
    # conv 3x3 stride 2 SAME on 20 rows -> 10 rows (total padding 1: none before);
    # depthwise 3x3 stride 1 SAME (1 before). Output rows [0, 2) of the depthwise need
    # conv rows [-1, 3) -> [0, 3), which need input rows [0, 2*2 + 3) = [0, 7).
    graph = _graph(Conv(filters=4, kernel=(3, 3), stride=(2, 2)), DepthwiseConv(kernel=(3, 3)))
    sub = graph.main
    out = sub.operators[1].outputs[0]
    regions = receptive_field(subgraph=sub, op_indices=[0, 1], output_key=out,
                              out_region=Region(Interval(0, 2), Interval(3, 5)))
    mid = sub.operators[0].outputs[0]
    assert regions[mid] == Region(Interval(0, 3), Interval(2, 6))
    # cols: conv cols [2, 6) -> input [4, 2*5 + 3) = [4, 13) (16 cols, total pad 1, none before)
    assert regions[sub.inputs[0]] == Region(Interval(0, 7), Interval(4, 13))


def test_explicit_pad_shifts_the_region():
    graph = _graph(Pad(top=2, bottom=1, left=0, right=3))
    smap = spatial_map(subgraph=graph.main, index=0)
    need = smap.input_regions(Region(Interval(0, 4), Interval(14, 19)))[0]
    assert need == Region(Interval(-2, 2), Interval(14, 19))


def test_dilated_non_square_conv_map():
    graph = _graph(Conv(filters=2, kernel=(5, 2), dilation=(2, 1), padding="VALID"))
    smap = spatial_map(subgraph=graph.main, index=0)
    need = smap.input_regions(Region(Interval(1, 3), Interval(0, 4)))[0]
    assert need == Region(Interval(1, 3 - 1 + 9), Interval(0, 5))


def test_same_fit_at_the_far_border_needs_no_dummies():
    # k3 s2 on 22 pixels pads 1 after. Outputs [5, 11) read [10, 23) -> real [10, 22):
    # SAME on 12 pixels gives 6 outputs, total padding 1, none before: already exact.
    fit = same_axis_fit(window=AxisWindow(kernel=3, stride=2), out=Interval(5, 11), size=22)
    assert fit == SameFit(before=0, after=0, skip=0, outputs=6)


def test_same_fit_inside_the_image_appends_a_dummy_and_drops_the_surplus_output():
    # Outputs [2, 5) read [4, 11) (7 pixels): SAME on 7 would pad 1 before (misaligned);
    # one dummy after -> 8 pixels, 4 outputs, padding 1 after, first 3 outputs wanted.
    fit = same_axis_fit(window=AxisWindow(kernel=3, stride=2), out=Interval(2, 5), size=22)
    assert fit == SameFit(before=0, after=1, skip=0, outputs=4)


def test_same_fit_at_the_near_border_keeps_the_padding_before():
    # k3 s1 pads 1 before: outputs [0, 4) read [-1, 5) -> real [0, 5); SAME on 5 pads
    # 1 before and 1 after, 5 outputs, the first 4 wanted (the 5th is clipped wrongly).
    fit = same_axis_fit(window=AxisWindow(kernel=3, stride=1, pad_before=1),
                        out=Interval(0, 4), size=10)
    assert fit == SameFit(before=0, after=0, skip=0, outputs=5)


def test_same_average_pool_is_supported():
    graph = _graph(Pool(kind="AVG", size=(3, 3), stride=(2, 2), padding="SAME"),
                   Pool(kind="AVG", size=(2, 2), stride=(2, 2), padding="VALID"))
    assert unsupported_reason(subgraph=graph.main, index=0) is None
    assert unsupported_reason(subgraph=graph.main, index=1) is None


def test_unsupported_op_error_names_the_op():
    graph = _graph(Conv(filters=2), Mean())
    with pytest.raises(UnsupportedOpError, match="#1 MEAN"):
        spatial_map(subgraph=graph.main, index=1)
