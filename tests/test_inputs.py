"""Reading posts for `analyze`: encodings from real bytes, delimiter hints, duplicate ids, missing columns and
empty files (fatal before a model loads), and bad rows that stay rows."""

from __future__ import annotations

import json

import pytest

from mentalglm.data.records import DataError
from mentalglm.inputs import Post, read_posts, unique_ids

ROWS = [("a1", "我最近总是失眠，觉得自己一无是处"), ("a2", "今天很开心，和朋友去爬山")]
CSV = "id,content\n" + "".join(f"{i},{t}\n" for i, t in ROWS)


def _read(path, **kw) -> list[tuple[str, str, str | None]]:
    return [(p.id, p.text, p.error) for p in read_posts(path, **kw)]


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-le-bom", "utf-16-be-bom",
                                      "gb18030", "utf-16-le"])
def test_csv_in_every_supported_encoding_reads_the_same_posts(tmp_path, encoding):
    boms = {"utf-16-le-bom": (b"\xff\xfe", "utf-16-le"), "utf-16-be-bom": (b"\xfe\xff", "utf-16-be")}
    bom, codec = boms.get(encoding, (b"", encoding))
    path = tmp_path / "posts.csv"
    path.write_bytes(bom + CSV.encode(codec))
    assert _read(path) == [(i, t, None) for i, t in ROWS]


def test_gb18030_text_file_and_jsonl(tmp_path):
    txt = tmp_path / "posts.txt"
    txt.write_bytes("第一条：好累\n第二条：开心\n".encode("gb18030"))
    assert _read(txt) == [("1", "第一条：好累", None), ("2", "第二条：开心", None)]
    jsonl = tmp_path / "posts.jsonl"
    jsonl.write_bytes("".join(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n"
                              for i, t in ROWS).encode("gb18030"))
    assert _read(jsonl) == [(i, t, None) for i, t in ROWS]


def test_a_utf8_file_with_one_gbk_line_keeps_the_good_rows_and_names_the_bad_one(tmp_path):
    path = tmp_path / "posts.csv"
    path.write_bytes(CSV.encode() + b"a3," + "坏编码".encode("gbk") + b"\n")
    rows = _read(path)
    assert rows[:2] == [(i, t, None) for i, t in ROWS]
    assert rows[2][0] == "a3" and "line 4: not valid UTF-8" in rows[2][2] and "iconv" in rows[2][2]


def test_a_file_in_no_known_encoding_is_fatal_with_the_iconv_hint(tmp_path):
    path = tmp_path / "posts.csv"
    path.write_bytes(b"id,text\n1,\x80\x80 bad\n")  # neither UTF-8 nor GB18030
    with pytest.raises(DataError, match=r"not UTF-8, UTF-16 .* or GB18030.*iconv -f GB18030 -t UTF-8 posts.csv"):
        list(read_posts(path))


def test_utf16_with_a_broken_byte_is_named(tmp_path):
    path = tmp_path / "posts.csv"
    path.write_bytes(b"\xff\xfe" + "id,text\n1,好累\n".encode("utf-16-le") + b"\x00\xd8")  # a lone surrogate
    with pytest.raises(DataError, match="read as UTF-16-LE .* save it again as UTF-8"):
        list(read_posts(path))


@pytest.mark.parametrize("name,sep,hint", [("posts.csv", "\t", "posts.csv looks tab-separated: pass --format tsv"),
                                           ("posts.tsv", ",", "posts.tsv looks comma-separated: pass --format csv")])
def test_a_delimiter_that_does_not_match_the_suffix_gets_a_hint(tmp_path, name, sep, hint):
    path = tmp_path / name
    path.write_text(f"id{sep}text\n1{sep}好累\n", encoding="utf-8")
    with pytest.raises(DataError, match=hint):
        list(read_posts(path))
    with pytest.raises(DataError, match=hint):  # with --text-column too
        list(read_posts(path, text_column="text"))
    fmt = "tsv" if sep == "\t" else "csv"
    assert _read(path, fmt=fmt) == [("1", "好累", None)]  # the hint works


def test_duplicate_ids_name_both_lines_or_are_numbered_on_request(tmp_path):
    path = tmp_path / "posts.csv"
    path.write_text("id,text\na1,一\na2,二\na1#2,三\n\"a1\",\"四\n续\"\na1,五\n", encoding="utf-8")
    posts = list(read_posts(path))
    with pytest.raises(DataError) as e:
        unique_ids(posts, str(path))
    assert str(e.value) == (f"{path}: id 'a1' on line 5 was already used on line 2; make the ids unique, "
                            "or pass --dedupe-ids to number repeats (a1#2, ...)")
    numbered = unique_ids(posts, str(path), dedupe=True)
    # 'a1#2' is a real id of the file, so the repeats of a1 skip it; the same numbering on every run
    assert [p.id for p in numbered] == ["a1", "a2", "a1#2", "a1#3", "a1#4"]
    assert [p.text for p in numbered] == ["一", "二", "三", "四\n续", "五"]
    assert unique_ids(posts, str(path), dedupe=True) == numbered


def test_missing_fields_and_empty_files_are_fatal_but_bad_lines_are_rows(tmp_path):
    jsonl = tmp_path / "posts.jsonl"
    jsonl.write_text('{"id": "1", "body": "好累"}\n{"id": "2", "body": "开心"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="no line has the text field"):
        list(read_posts(jsonl))
    with pytest.raises(DataError, match="no line has the id field 'pid'"):
        list(read_posts(jsonl, text_column="body", id_column="pid"))
    jsonl.write_text('{"id": "1", "text": "好累"}\n{"id": "2", "text": "开\n{"id": "3", "body": "x"}\n',
                     encoding="utf-8")
    rows = _read(jsonl)
    assert rows[0] == ("1", "好累", None)
    assert "line 2: invalid JSON" in rows[1][2] and "line 3: no text field" in rows[2][2]
    for name, content in (("empty.csv", b""), ("blank.txt", b"\n  \n"), ("empty.jsonl", b"\n")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DataError, match="empty file"):
            list(read_posts(tmp_path / name))


def test_posts_know_their_line():
    assert Post("1", "x").line is None  # positional construction elsewhere keeps working
