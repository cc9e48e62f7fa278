"""The dump rulebook: formats told by their first bytes, pairs checked whole, rows counted while streaming."""

import pytest

from services.data_servers import DumpRefused, MysqlRows, SqlRows, dump_format, pairs_to_resp

DUMP = (
    b"CREATE TABLE t (x int);\n"
    b"COPY t (x) FROM stdin;\n1\n2\n3\n\\.\n"
    b"INSERT INTO t VALUES (4);\ninsert into t values (5);\n"
    b"COPY t (x) FROM stdin;\n\\.\n"
    b"COPY t (x) FROM stdin;\n6\n\\.\n"
    b"SELECT 'COPY t FROM stdin;';\n"
    b"INSERT INTO t VALUES (7);"  # no newline at the end
)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64, len(DUMP)])
def test_it_counts_copy_lines_and_inserts_whatever_the_chunks(size):
    rows = SqlRows()
    for start in range(0, len(DUMP), size):
        rows.feed(DUMP[start : start + size])
    rows.finish()
    assert rows.rows == 7


MYSQL_DUMPS = {
    # mysqldump: a statement's tuples on its line
    b"INSERT INTO `t` VALUES (1,'a'),(2,'b'),(3,'c');\nINSERT INTO `t` VALUES (4,'d');\n": (4, False),
    # mariadb-dump 10.11: one tuple per line after the statement's first
    b"DROP TABLE IF EXISTS `t`;\nCREATE TABLE `t` (x int);\nINSERT INTO `t` VALUES\n(1,'a'),\n(2,'b'),\n(3,'c');\n"
    b"SET @x = (1);\n": (3, True),
}


@pytest.mark.parametrize(("dump", "expected"), MYSQL_DUMPS.items())
def test_it_counts_each_tuple_of_a_mysql_dump_and_whether_it_defines_tables(dump, expected):
    rows = MysqlRows()
    for start in range(0, len(dump), 5):
        rows.feed(dump[start : start + 5])
    rows.finish()
    assert (rows.rows, rows.defines_tables) == expected


@pytest.mark.parametrize(
    "runtime, head, expected",
    [
        ("postgresql", b"PGDMP\x01\x0e", "custom"),
        ("postgresql", "CREATE TABLE é (x int);\n".encode(), "sql"),
        ("redis", b"*3\r\n$3\r\nSET\r\n", "resp"),
        ("redis", b"a 1\n\nb two words\n", "pairs"),
    ],
)
def test_it_tells_the_format(tmp_path, runtime, head, expected):
    path = tmp_path / "dump"
    path.write_bytes(head)
    assert dump_format(str(path), runtime) == expected


@pytest.mark.parametrize(
    "runtime, head, message",
    [
        ("postgresql", b"", "the dump is empty"),
        ("postgresql", b"  \n", "the dump is empty"),
        ("postgresql", b"\x1f\x8b\x08\x00", "compressed (gzip)"),
        ("postgresql", b"\x89PNG\r\n\x1a\n\x00", "neither a plain SQL script"),
        ("redis", b"a 1\nb\n", "line 2 is not `key value`"),
    ],
)
def test_it_refuses_what_is_not_a_dump(tmp_path, runtime, head, message):
    path = tmp_path / "dump"
    path.write_bytes(head)
    with pytest.raises(DumpRefused, match=message.replace("(", r"\(").replace(")", r"\)")):
        dump_format(str(path), runtime)


def test_it_turns_pairs_into_set_commands():
    resp, count = pairs_to_resp([b"k v w\n", b"\n", b"x y\r\n"])
    assert count == 2
    assert resp == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv w\r\n*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$1\r\ny\r\n"
