"""A Delta Lake reader of its own, for the tests: replays `_delta_log` (the
newest checkpoint at or before the version, then the JSON commits after it)
with the standard library and pyarrow, and reads the live data files. It
knows nothing of recon or delta-rs, so a snapshot it reads correctly is one any
reader of the protocol reads correctly (reader version 1: no deletion vectors,
no column mapping)."""

import json
import os
import re
import urllib.parse

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

COMMIT = re.compile(r"^(\d{20})\.json$")
CHECKPOINT = re.compile(r"^(\d{20})\.checkpoint\.parquet$")


def versions(table):
    """The commit versions whose JSON files are in the log."""
    log = os.path.join(table, "_delta_log")
    return sorted(int(m.group(1)) for f in os.listdir(log) if (m := COMMIT.match(f)))


def actions(table, version=None):
    """The protocol, metadata and live `add` actions at `version` (newest by default)."""
    log = os.path.join(table, "_delta_log")
    names = os.listdir(log)
    commits = sorted(int(m.group(1)) for f in names if (m := COMMIT.match(f)))
    checkpoints = sorted(int(m.group(1)) for f in names if (m := CHECKPOINT.match(f)))
    if version is None:
        version = max(commits + checkpoints)
    start, live, protocol, metadata = -1, {}, None, None
    usable = [c for c in checkpoints if c <= version]
    if usable:
        start = usable[-1]
        rows = pq.read_table(os.path.join(log, f"{start:020}.checkpoint.parquet")).to_pylist()
        for row in rows:
            if row.get("add"):
                live[row["add"]["path"]] = row["add"]
            if row.get("protocol"):
                protocol = row["protocol"]
            if row.get("metaData"):
                metadata = row["metaData"]
    for v in range(start + 1, version + 1):
        path = os.path.join(log, f"{v:020}.json")
        if not os.path.exists(path):
            raise FileNotFoundError(f"version {v} is not in the log any more")
        with open(path) as f:
            for line in f:
                if not line.strip():
                    continue
                action = json.loads(line)
                if "add" in action:
                    live[action["add"]["path"]] = action["add"]
                elif "remove" in action:
                    live.pop(action["remove"]["path"], None)
                elif "protocol" in action:
                    protocol = action["protocol"]
                elif "metaData" in action:
                    metadata = action["metaData"]
    return protocol, metadata, list(live.values())


def commit_info(table, version):
    """The `commitInfo` action of one commit."""
    with open(os.path.join(table, "_delta_log", f"{version:020}.json")) as f:
        for line in f:
            if line.strip() and "commitInfo" in (action := json.loads(line)):
                return action["commitInfo"]
    return None


def read(table, version=None):
    """The table's rows at `version` as one Arrow table (partition columns
    restored from the file's partitionValues)."""
    protocol, metadata, files = actions(table, version)
    assert protocol["minReaderVersion"] == 1, protocol
    partition_columns = metadata.get("partitionColumns") or []
    parts = []
    for add in files:
        data = pq.read_table(os.path.join(table, urllib.parse.unquote(add["path"])))
        for name in partition_columns:
            value = add["partitionValues"].get(name)
            data = data.append_column(name, pa.array([value] * data.num_rows, pa.string()))
        parts.append(data)
    if not parts:
        return None
    return pa.concat_tables(parts, promote_options="permissive")


def rows(table, version=None):
    data = read(table, version)
    return 0 if data is None else data.num_rows


def column_sum(table, column, version=None):
    data = read(table, version)
    return pc.sum(data.column(column)).as_py()
