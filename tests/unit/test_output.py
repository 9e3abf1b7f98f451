from sysops.cli.output import format_data, format_table


def test_table_aligns_columns() -> None:
    text = format_table([{"name": "hello", "state": "Active"}, {"name": "x", "state": "Failed"}])
    assert text.splitlines() == ["NAME   STATE", "hello  Active", "x      Failed"]


def test_dict_becomes_key_value_table() -> None:
    assert format_data({"a": 1, "b": [1, 2]}).splitlines() == ["KEY  VALUE", "a    1", "b    [1, 2]"]


def test_list_of_scalars_is_lines() -> None:
    assert format_data(["x", 2]) == "x\n2"
