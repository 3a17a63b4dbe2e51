"""The report format: exactly one well-formed frame of known fields, or a ChannelError — never a crash."""

from __future__ import annotations

import pickle

import pytest

from tasks.sandbox.channel import HEADER, ChannelError, checked_result, decode_frame, encode_frame


def test_a_frame_round_trips_with_its_blob():
    data = encode_frame({"nonce": "n", "result": {"passed": True}}, b"\x80opaque")
    assert decode_frame(data, max_blob=100) == ({"nonce": "n", "result": {"passed": True}}, b"\x80opaque")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00\x00",
        pickle.dumps({"passed": True}),
        encode_frame({"a": 1}) + encode_frame({"a": 1}),  # two frames: someone else wrote too
        encode_frame({"a": 1})[:-1],  # cut short
        encode_frame({"a": 1}, b"blob"),  # a blob where none is allowed
        HEADER.pack(4, 0) + b"[1] ",  # not an object
        HEADER.pack(3, 0) + b"\xff\xfe{",  # not UTF-8
        HEADER.pack(3, 0) + b"NaN",
        HEADER.pack(1 << 30, 0),  # a length no result needs
        HEADER.pack(2, 0) + b"{}" + b"\x00" * 10,  # trailing bytes
    ],
)
def test_anything_but_one_frame_is_a_channel_error(data):
    with pytest.raises(ChannelError):
        decode_frame(data, max_blob=0)


@pytest.mark.parametrize(
    "result",
    [
        [1, 2],
        "passed",
        None,
        {"passed": "yes"},
        {"passed": 1},
        {"passed": True, "extra": 1},
        {"error": "no spaces allowed"},
        {"error": "x" * 100},
        {"seconds": -1},
        {"seconds": True},
        {"tests_run": -3},
        {"guards": "bwrap"},
        {"groups": {"base": {"passed": True, "index": "0"}}},
        {"groups": {"base": {"passed": True, "surprise": 1}}},
        {"input_seconds": {"base": [0.1, "x"]}},
        {"exit_code": 1 << 40},
    ],
)
def test_results_of_the_wrong_shape_are_refused(result):
    with pytest.raises(ChannelError):
        checked_result(result)


def test_a_good_result_is_kept_and_long_text_clipped():
    out = checked_result({"passed": False, "error": "tests_failed", "detail": "x" * 5000, "guards": ["bwrap"]})
    assert out["passed"] is False and out["error"] == "tests_failed" and len(out["detail"]) == 2000
    assert checked_result({"passed": True}) == {"passed": True, "error": None}
