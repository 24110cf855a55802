"""hub.records: chunks to Log records — numbering, merging under pressure, limits, long lines."""

from __future__ import annotations

from hub import vocabulary as V
from hub.uploads import UploadPolicy
from hub.records import EOF_STREAM, LONG_LINE_HOLD, NOTE_PREFIX, RecordMaker

LIMIT = V.DESCRIPTION_LIMIT


def maker(workers=4, read_stdout=True, leftover=None, seq=1, cwd="/"):
    policy = UploadPolicy.build(["/"], cwd, [], "/nonexistent-log", 10_000_000)
    return RecordMaker(cwd, read_stdout, policy, workers, leftover or {}, seq)


def unfold(records):
    return [line for r in records for line in r[4].split("\n")]


def test_a_few_lines_are_one_record_each_with_consecutive_numbers():
    m = maker()
    m.feed(V.STDOUT, b"one\ntwo\n", 10.0)
    m.feed(V.STDERR, b"oops\n", 11.0)
    assert [(r[0], r[1], r[3], r[4]) for r in m.records()] == [
        (1, "stdout", "Info", "one"), (2, "stdout", "Info", "two"), (3, "stderr", "Error", "oops")]


def test_more_lines_than_workers_merge_by_stream_and_type_in_order():
    m = maker(workers=2)
    m.feed(V.STDOUT, b"a\nb\nWARNING: c\nd\n", 1.0)
    m.feed(V.STDERR, b"e\nf\n", 2.0)
    m.feed(V.STDOUT, b"g\n", 3.0)
    records = m.records()
    assert [(r[0], r[3], r[4]) for r in records] == [
        (1, "Info", "a\nb"), (3, "Warning", "WARNING: c"), (4, "Info", "d"), (5, "Error", "e\nf"), (7, "Info", "g")]
    assert m.seq == 8


def test_a_flood_is_cut_into_records_at_the_limit_on_line_boundaries_with_their_own_read_times():
    m = maker()
    lines = [b"line %06d " % n + b"x" * 88 for n in range(1, 20001)]
    for start in range(0, 20000, 500):   # 40 chunks, read one second apart
        m.feed(V.STDOUT, b"\n".join(lines[start:start + 500]) + b"\n", 1000.0 + start // 500)
    records = m.records()
    assert unfold(records) == [l.decode() for l in lines]
    assert all(len(r[4]) <= LIMIT for r in records)
    assert all(len(r[4]) > LIMIT - 101 for r in records[:-1])  # full but for less than a line
    for record in records:   # the key's number is its first line's, the time its first line's chunk's
        first = int(record[4][5:11])
        assert record[0] == first and record[2] == 1000.0 + (first - 1) // 500


def test_plain_and_careful_paths_give_the_same_records():
    plain = maker(workers=1)
    careful = maker(workers=1)
    text = b"".join(b"row %d done\n" % n for n in range(300))
    plain.feed(V.STDERR, text, 5.0)
    for line in text.splitlines(keepends=True):   # one line a chunk, then the merge
        careful.feed(V.STDERR, line, 5.0)
    assert plain.records() == careful.records()


def test_a_block_of_plain_lines_states_the_levels_its_lines_state_whatever_their_case():
    from hub.lines import message_type_for
    lines = ["all quiet here", "ERROR in row 7", "error: lower case before a colon", "[warn] bracketed",
             "Error without a colon is only words", "eRRoR mixed case alone", "processed ERRORS 3",
             "INFO", "no capitals at all", "CRITICAL", "fatal: the end", "12 34 56"]
    for stream in (V.STDOUT, V.STDERR):
        for line in lines:
            m = maker(workers=1000)
            block = ["quiet line %d here" % n for n in range(50)] + [line] + ["more words %d" % n for n in range(50)]
            m.feed(stream, ("\n".join(block) + "\n").encode(), 1.0)
            assert [(r[4], r[3]) for r in m.records()] == [(text, message_type_for(stream, text)) for text in block]


def test_a_level_word_control_bytes_or_bad_utf8_take_the_careful_path():
    m = maker(workers=1)
    m.feed(V.STDERR, b"fine\n\x1b[31mred\x1b[0m\nbad \xff byte\nnul\x00here\nINFO: chatty\n", 1.0)
    assert [(r[3], r[4]) for r in m.records()] == [
        ("Error", "fine\nred\nbad \ufffd byte\nnul\ufffdhere"), ("Info", "INFO: chatty")]


def test_read_from_stdout_off_drops_stdout_but_not_stderr_or_notes():
    m = maker(read_stdout=False)
    m.feed(V.STDOUT, b"chatter\nmore chatter\n", 1.0)
    m.feed(V.STDERR, b"trouble\n", 1.0)
    m.feed(NOTE_PREFIX + V.ERROR, b"Exit code 2", 2.0)
    assert [(r[1], r[4]) for r in m.records()] == [("stderr", "trouble"), ("hub", "Exit code 2")]


def test_a_printed_file_is_its_own_record_and_proc_files_are_not_files(tmp_path):
    report = tmp_path / "out.csv"
    report.write_text("x")
    m = maker(workers=1, cwd=str(tmp_path))
    m.feed(V.STDOUT, b"a\nout.csv\nb\n/proc/self/status\n", 1.0)
    assert [(r[4], r[6]) for r in m.records()] == [
        ("a", None), ("out.csv", str(report)), ("b\n/proc/self/status", None)]


def test_a_partial_line_waits_for_its_end_across_makers():
    first = maker()
    first.feed(V.STDOUT, b"hel", 1.0)
    assert first.records() == [] and first.leftover() == {"stdout": "hel"}
    second = maker(leftover=first.leftover(), seq=first.seq)
    second.feed(V.STDOUT, b"lo\n", 2.0)
    second.feed(EOF_STREAM, b"", 3.0)
    assert [r[4] for r in second.records()] == ["hello"]


def test_a_line_without_end_is_sent_in_parts_as_it_grows_and_numbered_when_it_ends():
    m = maker()
    m.feed(V.STDERR, b"E" * (LONG_LINE_HOLD + 3 * LIMIT), 1.0)
    streamed = m.records()
    assert [r[5] for r in streamed] == ["(part 1/\u2026) ", "(part 2/\u2026) ", "(part 3/\u2026) "]
    assert len(m.splitters[V.STDERR].leftover) <= LONG_LINE_HOLD
    later = maker(leftover=m.leftover(), seq=m.seq)   # the state survives a restart
    later.feed(V.STDERR, b"E" * 10 + b"\nnext\n", 2.0)
    ends = later.records()
    total = 3 + len(ends) - 1
    assert [r[5] for r in ends[:-1]] == [f"(part {n}/{total}) " for n in range(4, total + 1)]
    assert sum(len(r[4]) for r in streamed + ends[:-1]) == LONG_LINE_HOLD + 3 * LIMIT + 10
    assert ends[-1][4] == "next" and later.leftover() == {}


def test_parts_are_not_cut_inside_a_character():
    m = maker()
    m.feed(V.STDOUT, "é".encode() * (LONG_LINE_HOLD // 2 + LIMIT), 1.0)
    assert all("\ufffd" not in r[4] and len(r[4]) <= LIMIT for r in m.records())


def test_log_numbers_sort_in_output_order_past_a_million_lines():
    from hub.delivery import log_number
    numbers = [1, 42, 999_999, 1_000_000, 1_000_001, 9_999_999, 10_000_000, 123_456_789]
    assert log_number(42) == "000042"
    assert sorted(log_number(n) for n in reversed(numbers)) == [log_number(n) for n in numbers]
