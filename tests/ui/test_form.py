"""The Setup form: its widgets are matched to config fields by name, and its sliders and choices
are read from the config's declared constraints."""

from __future__ import annotations

import pytest

from lab import config
from lab.ui import form


def test_widgets_are_placed_by_field_name_whatever_the_order_they_were_made_in():
    widgets = {name: f"widget of {name}" for name in reversed(form.FIELDS)}
    a, b = form.FIELDS[5], form.FIELDS[6]
    widgets[a], widgets[b] = widgets[b], widgets[a]  # two widgets under each other's names
    placed = form.ordered(widgets)
    assert placed[5] == f"widget of {b}" and placed[6] == f"widget of {a}"
    assert form.form_values(tuple(placed))[a] == f"widget of {b}"  # the name decides, not order


def test_a_missing_or_unknown_field_is_refused():
    widgets = {name: object() for name in form.FIELDS}
    del widgets["reg.lambda2"]
    with pytest.raises(ValueError, match=r"missing \['reg.lambda2'\]"):
        form.ordered(widgets)
    widgets["reg.lambda2"], widgets["reg.lambda4"] = object(), object()
    with pytest.raises(ValueError, match=r"not fields \['reg.lambda4'\]"):
        form.ordered(widgets)


@pytest.mark.parametrize("path", sorted(form.SLIDERS))
def test_every_slider_value_passes_validation(path):
    r = form.slider_range(path)
    assert config.check_value(path, r["minimum"]) is None
    assert config.check_value(path, r["maximum"]) is None
    # one step past either end is refused, or the end is the form's own choice of range
    below = config.check_value(path, r["minimum"] - r["step"])
    rules = config.rules(path)
    assert below is not None or r["minimum"] > rules.get("ge", rules.get("gt", float("-inf")))


def test_minority_slider_stops_below_the_declared_bound():
    r = form.slider_range("data.minority_fraction")
    assert r["maximum"] == pytest.approx(config.rules("data.minority_fraction")["lt"] - r["step"])


def test_built_setup_tab_puts_each_widget_under_its_own_field():
    import gradio as gr

    from lab.ui import setup

    with gr.Blocks():
        tab = setup.build(gr.State(""))
    assert len(tab.form) == len(form.FIELDS)
    for name, widget in zip(form.FIELDS, tab.form):
        assert tab.fields[name] is widget
        if getattr(widget, "visible", True) is not False:
            assert widget.label == form.FIELD_LABELS[name], name
    assert [c[1] for c in tab.fields["task"].choices] == list(config.rules("task")["choices"])
    teacher = [c[1] for c in tab.fields["reg.teacher_dtype"].choices]
    assert teacher == list(config.rules("reg.teacher_dtype")["choices"])
    minority = tab.fields["data.minority_fraction"]
    assert (minority.minimum, minority.maximum) == (0, 0.45)
