"""The one content fingerprint behind resumable checkpoints: whole files, folders, order."""

from confkd.io import fingerprint


def test_fingerprint_covers_the_whole_file_and_folder(tmp_path):
    big = tmp_path / "data" / "train.jsonl"
    big.parent.mkdir()
    payload = bytearray(b"x" * (3 << 20))  # 3 MB: a change past the first megabyte must count
    big.write_bytes(payload)
    before = fingerprint("cfg", big)
    folder_before = fingerprint(tmp_path / "data")
    payload[-1:] = b"y"
    big.write_bytes(payload)
    assert fingerprint("cfg", big) != before
    assert fingerprint(tmp_path / "data") != folder_before
    (tmp_path / "data" / "extra.txt").write_text("new file")
    assert fingerprint(tmp_path / "data") != folder_before
    assert fingerprint("a", "b") != fingerprint("ab") != fingerprint(b"ab")
    assert fingerprint("cfg", big) == fingerprint("cfg", big)  # deterministic
