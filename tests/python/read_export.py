#!/usr/bin/env python3
"""Reads a file of `mekong export` with readers nobody here wrote, and prints it as JSON for
the Rust tests to check: {"schema": {column: type}, "rows": [[device, kind, metric, unit,
time_ms, value_bits, value_bool], ...]}. The value goes as the u64 of its IEEE-754 bits, so
that every bit is compared.

usage: read_export.py csv FILE     (Python's csv module)
       read_export.py parquet FILE (pyarrow)
"""
import csv
import datetime
import json
import struct
import sys

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
MS = datetime.timedelta(milliseconds=1)


def bits(value):
    return struct.unpack("<Q", struct.pack("<d", value))[0]


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        raw = f.read()
    # RFC 4180: every line ends with CRLF.
    assert raw == "" or raw.endswith("\r\n"), "a line does not end with CRLF"
    assert "\n" not in raw.replace("\r\n", ""), "a bare LF"
    reader = csv.reader(raw.splitlines(keepends=True), strict=True)
    header = next(reader)
    rows = []
    for record in reader:
        device, kind, metric, unit, time, value, value_bool = record
        assert time.endswith("Z") and len(time) == 24, time
        t = datetime.datetime.fromisoformat(time)
        rows.append([
            device, kind, metric, unit or None, (t - EPOCH) // MS, bits(float(value)),
            {"": None, "true": True, "false": False}[value_bool],
        ])
    return {"schema": {name: "text" for name in header}, "header": header, "rows": rows}


def read_parquet(path):
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    schema = {field.name: str(field.type) for field in table.schema}
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    times = table.column("time").cast("int64").to_pylist()
    rows = [
        [columns["device"][i], columns["kind"][i], columns["metric"][i], columns["unit"][i],
         times[i], bits(columns["value"][i]), columns["value_bool"][i]]
        for i in range(table.num_rows)
    ]
    meta = pq.ParquetFile(path).metadata
    compression = sorted({meta.row_group(g).column(c).compression
                          for g in range(meta.num_row_groups) for c in range(meta.num_columns)})
    return {"schema": schema, "header": table.column_names, "rows": rows, "compression": compression}


if __name__ == "__main__":
    kind, path = sys.argv[1], sys.argv[2]
    out = read_csv(path) if kind == "csv" else read_parquet(path)
    json.dump(out, sys.stdout)
