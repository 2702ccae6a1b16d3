"""Streaming readers for import files: CSV (any common encoding, sniffed
delimiter) and Excel (openpyxl read-only, behind zip-bomb limits).

A reader never holds the whole file: ``open_table`` returns the header and an
iterator of ``(row_number, values)`` where ``row_number`` is the file's own
line (CSV record) or sheet row, 1-based, header included, so an error points
at the row a user sees in their spreadsheet.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Bytes sniffed for the delimiter.
SNIFF_BYTES = 64 * 1024
DELIMITERS = ",;\t|"
#: Tried, in order, when a file is not UTF-8 and no encoding was declared.
FALLBACK_ENCODINGS = ("cp1252",)


class ImportFileError(ValueError):
    """The file cannot be read as a table; the message says why in one line."""


@dataclass
class Limits:
    max_file_bytes: int = 200 * 1024 * 1024
    max_zip_entries: int = 200
    max_uncompressed_bytes: int = 500 * 1024 * 1024
    max_compression_ratio: float = 200.0


@dataclass
class Table:
    header: list[str]
    rows: Iterator[tuple[int, list[Any]]]
    total: int | None  # data rows, when known cheaply
    encoding: str | None = None
    delimiter: str | None = None
    close: Any = None
    estimated: bool = False  # ``total`` is an estimate from the file's size


def open_table(path: str | Path, limits: Limits | None = None, encoding: str | None = None) -> Table:
    """Open a CSV or XLSX file (by its content, not its name) as a header plus a row stream."""
    path = Path(path)
    limits = limits or Limits()
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise ImportFileError(f"{path}: cannot open: {exc.strerror}") from None
    if size > limits.max_file_bytes:
        raise ImportFileError(f"{path.name}: file is {size:,} bytes, over the limit of {limits.max_file_bytes:,}")
    if size == 0:
        raise ImportFileError(f"{path.name}: the file is empty")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic.startswith(b"PK"):
        return _open_xlsx(path, limits)
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        raise ImportFileError(f"{path.name}: not a valid .xlsx file (no zip signature; truncated or not Excel)")
    return _open_csv(path, encoding)


# ---------------------------------------------------------------- CSV


def detect_encoding(path: Path, declared: str | None = None) -> str:
    """UTF-8 (with or without BOM), else the declared encoding, else cp1252.

    The whole file is decoded once, in chunks, so a bad byte in the last line
    is found before anything is written.
    """
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(codecs.BOM_UTF8):
        candidates = ["utf-8-sig"]
    elif head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        candidates = ["utf-16"]
    else:
        candidates = ["utf-8", *([declared] if declared else FALLBACK_ENCODINGS)]
    if declared:
        try:
            codecs.lookup(declared)
        except LookupError:
            raise ImportFileError(f"{path.name}: unknown encoding {declared!r}") from None
    last: tuple[str, int, int] | None = None
    for enc in candidates:
        decoder = codecs.getincrementaldecoder(enc)()
        offset = 0
        try:
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    if "\x00" in decoder.decode(chunk) and not enc.startswith("utf-16"):
                        raise ImportFileError(f"{path.name}: contains NUL bytes: a binary file, not CSV")
                    offset += len(chunk)
                decoder.decode(b"", final=True)
            return enc
        except UnicodeDecodeError as exc:
            last = (enc, offset + exc.start, exc.object[exc.start] if exc.object else 0)
    enc, pos, byte = last or ("?", 0, 0)
    tried = ", ".join(candidates)
    raise ImportFileError(f"{path.name}: cannot decode byte 0x{byte:02x} at offset {pos} (tried {tried}); "
                          "give the file's encoding with --encoding")


def _sniff(sample: str) -> str:
    try:
        return csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:
        first = sample.splitlines()[0] if sample else ""
        counts = {d: first.count(d) for d in DELIMITERS}
        best = max(counts, key=counts.get)  # type: ignore[arg-type]
        return best if counts[best] else ","


def _open_csv(path: Path, declared: str | None) -> Table:
    enc = detect_encoding(path, declared)
    f = open(path, encoding=enc, newline="")  # noqa: SIM115 - closed by the Table's close / exhaustion
    sample = f.read(SNIFF_BYTES)
    f.seek(0)
    delimiter = _sniff(sample)
    reader = csv.reader(f, delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        f.close()
        raise ImportFileError(f"{path.name}: the file is empty") from None
    except csv.Error as exc:
        f.close()
        raise ImportFileError(f"{path.name}: not a CSV file: {exc}") from None
    if not any(h.strip() for h in header):
        f.close()
        raise ImportFileError(f"{path.name}: the first line (the header) is empty")
    total, estimated = _estimate_rows(path, sample, enc, delimiter)

    def rows() -> Iterator[tuple[int, list[Any]]]:
        try:
            for values in reader:
                if not values or not any(v.strip() for v in values):
                    continue
                yield reader.line_num, values
        except csv.Error as exc:
            raise ImportFileError(f"{path.name}: line {reader.line_num}: {exc}") from None
        finally:
            f.close()

    return Table([h.strip() for h in header], rows(), total, enc, delimiter, f.close, estimated)


def _count_rows(text: str, delimiter: str) -> int:
    """Non-blank data records (header excluded) in ``text``."""
    n = -1
    try:
        for values in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter):
            if values and any(v.strip() for v in values):
                n += 1
    except csv.Error:
        pass  # a broken record is reported by the row stream, with its line
    return max(n, 0)


def _estimate_rows(path: Path, sample: str, enc: str, delimiter: str) -> tuple[int, bool]:
    """(data rows, estimated?): exact when the whole file is in the sniffed
    sample, else the file's size over the sample's bytes per record, so a big
    file is not read once more just to show an ETA (the import corrects the
    total as it reads, and sets the exact count at the end)."""
    size = os.path.getsize(path)
    if len(sample) < SNIFF_BYTES:
        return _count_rows(sample, delimiter), False
    cut = sample.rfind("\n")
    head = sample[:cut + 1] if cut > 0 else sample
    records = _count_rows(head, delimiter) + 1  # + the header
    per = len(head.encode(enc, errors="replace")) / max(records, 1)
    return max(int(size / per) - 1, 1), True


# ---------------------------------------------------------------- XLSX


def check_zip(path: Path, limits: Limits) -> None:
    """Refuse zip bombs before openpyxl sees the file: entry count and declared
    sizes from the central directory (cheap), then the bytes actually inflated,
    counted while streaming and stopped at the limit (headers can lie)."""
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise ImportFileError(f"{path.name}: not a valid .xlsx file (truncated or corrupt: {exc})") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.max_zip_entries:
            raise ImportFileError(f"{path.name}: {len(infos)} zip entries, over the limit of {limits.max_zip_entries}")
        declared = sum(i.file_size for i in infos)
        if declared > limits.max_uncompressed_bytes:
            raise ImportFileError(f"{path.name}: expands to {declared:,} bytes, over the limit of "
                                  f"{limits.max_uncompressed_bytes:,} (zip bomb?)")
        for i in infos:
            if i.compress_size and i.file_size / i.compress_size > limits.max_compression_ratio \
                    and i.file_size > 1024 * 1024:
                raise ImportFileError(f"{path.name}: entry {i.filename} compressed {i.file_size / i.compress_size:.0f}:1,"
                                      f" over the limit of {limits.max_compression_ratio:.0f}:1 (zip bomb?)")
        inflated = 0
        try:
            for i in infos:
                with zf.open(i) as member:
                    while chunk := member.read(1 << 20):
                        inflated += len(chunk)
                        if inflated > limits.max_uncompressed_bytes:
                            raise ImportFileError(f"{path.name}: expands to more than "
                                                  f"{limits.max_uncompressed_bytes:,} bytes (zip bomb?)")
        except (zipfile.BadZipFile, EOFError, OSError, zipfile.LargeZipFile) as exc:
            raise ImportFileError(f"{path.name}: not a valid .xlsx file (truncated or corrupt: {exc})") from None
        except Exception as exc:  # zlib.error and friends
            if isinstance(exc, ImportFileError):
                raise
            raise ImportFileError(f"{path.name}: not a valid .xlsx file ({type(exc).__name__}: {exc})") from None


def _open_xlsx(path: Path, limits: Limits) -> Table:
    import openpyxl

    check_zip(path, limits)
    try:
        wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:
        raise ImportFileError(f"{path.name}: not a readable .xlsx file ({type(exc).__name__}: {exc})") from None
    ws = wb.worksheets[0] if wb.worksheets else None
    if ws is None:
        wb.close()
        raise ImportFileError(f"{path.name}: the workbook has no sheet")
    it = ws.iter_rows(values_only=True)
    header: list[str] | None = None
    header_row = 0
    try:
        for n, values in enumerate(it, 1):
            if values and any(v not in (None, "") for v in values):
                header, header_row = [("" if v is None else str(v)).strip() for v in values], n
                break
    except Exception as exc:
        wb.close()
        raise ImportFileError(f"{path.name}: cannot read the first sheet ({type(exc).__name__}: {exc})") from None
    if header is None:
        wb.close()
        raise ImportFileError(f"{path.name}: the first sheet is empty")
    total = (ws.max_row - header_row) if ws.max_row else None

    def rows() -> Iterator[tuple[int, list[Any]]]:
        try:
            for n, values in enumerate(it, header_row + 1):
                if values and any(v not in (None, "") for v in values):
                    yield n, list(values)
        except ImportFileError:
            raise
        except Exception as exc:
            raise ImportFileError(f"{path.name}: row {n}: cannot read ({type(exc).__name__}: {exc})") from None
        finally:
            wb.close()

    return Table(header, rows(), total, close=wb.close)
