"""Arm colours stay apart for a viewer with a red-green colour-vision deficiency, and colour is
never the only cue: each arm kind has its own marker, the seeds of one arm their own dash."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from colorspacious import cspace_convert, deltaE

from lab.plots.common import arm_color, arm_style

ARMS = ("base", "lora", "pissa", "balora")
MIN_DELTA_E = 20.0  # CAM02-UCS distance; about 2 is a just-noticeable difference


def _rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)])


def _simulated(hex_colour: str, cvd: str) -> np.ndarray:
    space = {"name": "sRGB1+CVD", "cvd_type": cvd, "severity": 100}
    return np.clip(cspace_convert(_rgb(hex_colour), space, "sRGB1"), 0, 1)


@pytest.mark.parametrize("cvd", ["deuteranomaly", "protanomaly"])
@pytest.mark.parametrize("a,b", list(itertools.combinations(ARMS, 2)))
def test_arm_colours_stay_apart_under_colour_blindness(cvd, a, b):
    d = deltaE(_simulated(arm_color(a), cvd), _simulated(arm_color(b), cvd), input_space="sRGB1")
    assert d >= MIN_DELTA_E, f"{a} and {b} look alike under {cvd}: ΔE {d:.1f}"


def test_every_arm_kind_has_its_own_marker_and_dash():
    styles = [arm_style(a) for a in ARMS]
    assert len({s["marker"]["symbol"] for s in styles}) == len(ARMS)
    assert len({s["line"]["dash"] for s in styles}) == len(ARMS)


def test_seeds_of_one_arm_share_the_hue_and_differ_in_dash():
    seeds = [arm_style(f"balora#s{k}") for k in range(3)]
    assert len({s["line"]["color"] for s in seeds}) == 1
    assert len({s["line"]["dash"] for s in seeds}) == 3
    assert seeds[0]["line"]["color"] == arm_color("balora")
