from versions.models import changed_settings, swapped_settings


def setting(value: str, sticky: bool = False) -> dict:
    return {"value": value, "sticky": sticky}


def test_it_names_added_removed_and_changed_settings_sorted():
    before = {"KEPT": setting("1"), "GONE": setting("2"), "VALUE": setting("3")}
    after = {"KEPT": setting("1"), "VALUE": setting("4"), "ADDED": setting("5")}

    assert changed_settings(before, after) == ["ADDED", "GONE", "VALUE"]


def test_it_names_a_setting_whose_stickiness_changes():
    assert changed_settings({"API": setting("x")}, {"API": setting("x", sticky=True)}) == ["API"]


def test_it_names_nothing_when_nothing_changes():
    assert changed_settings({"API": setting("x")}, {"API": setting("x")}) == []
    assert changed_settings({}, {}) == []


def test_after_a_swap_it_names_exactly_the_settings_whose_value_changed():
    production = {"PAY": setting("live", sticky=True), "GREETING": setting("hello"), "SAME": setting("s")}
    other = {"PAY": setting("sandbox", sticky=True), "GREETING": setting("hi"), "SAME": setting("s")}

    after, _ = swapped_settings(production, other)

    assert changed_settings(production, after) == ["GREETING"]
