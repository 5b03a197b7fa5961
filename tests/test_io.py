"""Tests for daskem.io: reading sources, the cache decision and atomic writers."""

import os
import threading
import time
import uuid

import dask
import dask.array as da
import dask.dataframe as dd
import fsspec
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import zarr

from daskem.io import cache_decision, column_names, read, write_output, write_parquet, write_zarr

# ---------------------------------------------------------------- fixtures


@pytest.fixture
def data():
    """A small float64 matrix with distinct values."""
    return np.arange(300, dtype=np.float64).reshape(100, 3) / 7.0


@pytest.fixture
def memfs():
    """The fsspec memory filesystem under a unique root, emptied afterwards."""
    fs = fsspec.filesystem("memory")
    root = f"memory://test-{uuid.uuid4().hex}"
    yield fs, root
    fs.store.clear()
    fs.pseudo_dirs.clear()
    fs.pseudo_dirs.append("")


@pytest.fixture
def small_cluster():
    """A one-worker in-process cluster with a 640 MiB memory limit (room for 128 MiB of data)."""
    from distributed import Client, LocalCluster

    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, memory_limit="640MiB", dashboard_address=":0"
    ) as cluster, Client(cluster) as client:
        yield client


def make_zarr(path, values, chunks, shards=None):
    z = zarr.create_array(str(path), shape=values.shape, chunks=chunks, shards=shards, dtype=values.dtype)
    z[:] = values
    return z


def row_boundaries(x):
    return np.cumsum(x.chunks[0])


def hidden_entries(directory):
    """Names starting with '.' (temporary or set-aside outputs) in a directory."""
    return [n for n in os.listdir(directory) if n.startswith(".")]


def failing_on_third_chunk(x):
    """x, lazily, with the function applied to its third row chunk raising."""

    def f(block, block_info=None):
        if block_info[0]["chunk-location"][0] == 2:
            raise RuntimeError("injected failure")
        return block

    return x.map_blocks(f, dtype=x.dtype)


# ---------------------------------------------------------------- Zarr sources


def test_read_zarr_path_returns_values_with_one_column_chunk(tmp_path, data):
    make_zarr(tmp_path / "x.zarr", data, chunks=(10, 3))
    x = read(tmp_path / "x.zarr")
    assert x.dtype == np.float64
    assert len(x.chunks[1]) == 1
    np.testing.assert_array_equal(x.compute(), data)


def test_read_zarr_integers_become_float64(tmp_path, data):
    make_zarr(tmp_path / "x.zarr", data.astype(np.int32), chunks=(10, 3))
    x = read(str(tmp_path / "x.zarr"))
    assert x.dtype == np.float64
    np.testing.assert_array_equal(x.compute(), data.astype(np.int32))


def test_read_zarr_float32_stays_float32(tmp_path, data):
    make_zarr(tmp_path / "x.zarr", data.astype(np.float32), chunks=(10, 3))
    assert read(tmp_path / "x.zarr").dtype == np.float32


def test_read_zarr_chunks_rounded_to_stored_chunk_rows(tmp_path, data):
    make_zarr(tmp_path / "x.zarr", data, chunks=(10, 3))
    x = read(tmp_path / "x.zarr", chunks=27)
    assert x.chunks[0] == (30, 30, 30, 10)


def test_read_zarr_chunks_aligned_to_shards_when_sharded(tmp_path, data):
    make_zarr(tmp_path / "x.zarr", data, chunks=(5, 3), shards=(20, 3))
    x = read(tmp_path / "x.zarr", chunks=7)  # smaller than a shard: one whole shard per chunk
    assert x.chunks[0] == (20, 20, 20, 20, 20)


def test_read_zarr_chunk_bytes_gives_whole_stored_chunks(tmp_path, data):
    make_zarr(tmp_path / "x.zarr", data, chunks=(8, 3))
    x = read(tmp_path / "x.zarr", chunk_bytes=40 * 3 * 8)  # about 40 rows of float64
    assert all(b % 8 == 0 for b in row_boundaries(x)[:-1])
    assert x.chunks[0][0] == 40
    np.testing.assert_array_equal(x.compute(), data)


def test_read_zarr_group_with_component_argument(tmp_path, data):
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_array("features/X", shape=data.shape, chunks=(10, 3), dtype=data.dtype)[:] = data
    group.create_array("other", shape=(4, 2), dtype="f8")
    x = read(tmp_path / "g.zarr", component="features/X")
    np.testing.assert_array_equal(x.compute(), data)


def test_read_zarr_group_with_suffix_component(tmp_path, data):
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_array("features/X", shape=data.shape, chunks=(10, 3), dtype=data.dtype)[:] = data
    group.create_array("other", shape=(4, 2), dtype="f8")
    x = read(f"{tmp_path / 'g.zarr'}::features/X")
    np.testing.assert_array_equal(x.compute(), data)


def test_read_zarr_group_uses_its_only_2d_array(tmp_path, data):
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_array("sub/X", shape=data.shape, chunks=(10, 3), dtype=data.dtype)[:] = data
    group.create_array("labels", shape=(100,), dtype="i4")  # 1-D arrays are not candidates
    np.testing.assert_array_equal(read(tmp_path / "g.zarr").compute(), data)


def test_read_zarr_group_with_several_2d_arrays_lists_them(tmp_path):
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_array("a", shape=(4, 2), dtype="f8")
    group.create_array("b", shape=(5, 2), dtype="f8")
    with pytest.raises(ValueError, match=r"holds 2 2-D arrays.*a \(4, 2\).*b \(5, 2\)"):
        read(tmp_path / "g.zarr")


def test_read_zarr_missing_component_lists_arrays(tmp_path):
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_array("a", shape=(4, 2), dtype="f8")
    with pytest.raises(ValueError, match=r"no array 'nope'.*a \(4, 2\)"):
        read(tmp_path / "g.zarr", component="nope")


def test_read_zarr_component_given_twice_is_rejected(tmp_path):
    zarr.open_group(str(tmp_path / "g.zarr"), mode="w").create_array("a", shape=(4, 2), dtype="f8")
    with pytest.raises(ValueError, match="given twice"):
        read(f"{tmp_path / 'g.zarr'}::a", component="a")


def test_read_zarr_file_url(tmp_path, data):
    make_zarr(tmp_path / "x.zarr", data, chunks=(10, 3))
    x = read((tmp_path / "x.zarr").as_uri())
    np.testing.assert_array_equal(x.compute(), data)


def test_read_zarr_memory_url_with_storage_options(memfs, data):
    _, root = memfs
    options = {"skip_instance_cache": True}
    z = zarr.create_array(
        f"{root}/x.zarr", shape=data.shape, chunks=(10, 3), dtype=data.dtype, storage_options=options
    )
    z[:] = data
    x = read(f"{root}/x.zarr", storage_options=options, chunks=20)
    assert x.chunks[0] == (20,) * 5
    np.testing.assert_array_equal(x.compute(), data)


def test_read_zarr_memory_url_group_suffix_component(memfs, data):
    _, root = memfs
    group = zarr.open_group(f"{root}/g.zarr", mode="w")
    group.create_array("X", shape=data.shape, chunks=(10, 3), dtype=data.dtype)[:] = data
    group.create_array("Y", shape=data.shape, chunks=(10, 3), dtype=data.dtype)
    np.testing.assert_array_equal(read(f"{root}/g.zarr::X").compute(), data)


# ---------------------------------------------------------------- Parquet sources


def test_read_parquet_file_with_columns_subset(tmp_path):
    df = pd.DataFrame({"a": np.arange(10), "b": np.linspace(0, 1, 10), "name": list("abcdefghij")})
    df.to_parquet(tmp_path / "f.parquet", row_group_size=3)
    x = read(tmp_path / "f.parquet", columns=["b", "a"])
    assert x.dtype == np.float64
    np.testing.assert_array_equal(x.compute(), df[["b", "a"]].to_numpy(np.float64))


def test_read_parquet_chunks_are_known_and_follow_row_groups(tmp_path):
    df = pd.DataFrame({"a": np.arange(10.0), "b": np.arange(10.0)})
    df.to_parquet(tmp_path / "f.parquet", row_group_size=3)  # row groups 3, 3, 3, 1
    x = read(tmp_path / "f.parquet", chunks=4)
    assert x.chunks == ((3, 3, 4), (2,))
    np.testing.assert_array_equal(x.compute(), df.to_numpy())


def test_read_parquet_directory_keeps_row_order(tmp_path):
    df = pd.DataFrame({"a": np.arange(120.0), "b": -np.arange(120.0), "c": np.arange(120) % 7})
    (tmp_path / "d.parquet").mkdir()
    for i in range(12):  # part.0 ... part.11: part.10 must come after part.2
        df.iloc[10 * i : 10 * (i + 1)].to_parquet(tmp_path / "d.parquet" / f"part.{i}.parquet")
    (tmp_path / "d.parquet" / "_SUCCESS").write_text("")  # marker files are skipped
    x = read(tmp_path / "d.parquet", columns=["a", "c"], chunks=10)
    assert not np.isnan(x.shape[0]) and x.chunks[0] == (10,) * 12
    np.testing.assert_array_equal(x.compute(), df[["a", "c"]].to_numpy(np.float64))


def test_read_parquet_float32_columns_stay_float32(tmp_path):
    frame = pd.DataFrame({"a": np.ones(4, np.float32), "b": np.zeros(4, np.float32)})
    frame.to_parquet(tmp_path / "f.parquet")
    assert read(tmp_path / "f.parquet").dtype == np.float32


def test_read_parquet_nulls_become_nan(tmp_path):
    df = pd.DataFrame({"a": pd.array([1, None, 3], dtype="Int64"), "b": [1.0, 2.0, None]})
    df.to_parquet(tmp_path / "f.parquet")
    x = read(tmp_path / "f.parquet").compute()
    np.testing.assert_array_equal(np.isnan(x), [[False, False], [True, False], [False, True]])


# ---------------------------------------------------------------- .npy and in-memory sources


def test_read_npy_is_memory_mapped_and_lazy(tmp_path, data):
    np.save(tmp_path / "x.npy", data)
    x = read(tmp_path / "x.npy", chunks=30)
    assert x.chunks == ((30, 30, 30, 10), (3,))
    # The graph holds a reader of the file, not the data.
    assert not any(isinstance(v, np.ndarray) for v in x.__dask_graph__().values())
    np.testing.assert_array_equal(x.compute(), data)


def test_read_npy_file_url(tmp_path, data):
    np.save(tmp_path / "x.npy", data.astype(np.int16))
    x = read((tmp_path / "x.npy").as_uri())
    assert x.dtype == np.float64
    np.testing.assert_array_equal(x.compute(), data.astype(np.int16))


def test_read_numpy_array(data):
    x = read(data, chunks=40)
    assert x.chunks == ((40, 40, 20), (3,))
    np.testing.assert_array_equal(x.compute(), data)


def test_read_numpy_bools_become_float64():
    x = read(np.array([[True, False], [False, True]]))
    assert x.dtype == np.float64
    np.testing.assert_array_equal(x.compute(), [[1.0, 0.0], [0.0, 1.0]])


def test_read_dask_array_keeps_uneven_row_chunks_and_merges_columns(data):
    source = da.from_array(data, chunks=((10, 50, 40), (1, 2)))
    x = read(source)
    assert x.chunks == ((10, 50, 40), (3,))
    np.testing.assert_array_equal(x.compute(), data)


def test_read_dask_array_resizes_rows_when_merged_columns_exceed_chunk_bytes(data):
    source = da.from_array(data, chunks=(50, 1))
    x = read(source, chunk_bytes=20 * 3 * 8)  # 20 rows of 3 float64
    assert x.chunks == ((20,) * 5, (3,))


def test_read_dask_array_rechunks_rows_when_asked(data):
    x = read(da.from_array(data, chunks=(10, 3)), chunks=25)
    assert x.chunks == ((25, 25, 25, 25), (3,))


def test_read_dask_array_computes_unknown_chunk_sizes(data):
    source = da.from_array(data, chunks=(20, 3))
    source = source[source[:, 0] > 10]  # unknown row counts per chunk
    assert np.isnan(source.shape[0])
    x = read(source)
    assert not any(np.isnan(c) for c in x.chunks[0])
    np.testing.assert_array_equal(x.compute(), data[data[:, 0] > 10])


def test_read_pandas_dataframe_with_columns():
    df = pd.DataFrame({"a": [1, 2, 3], "b": [0.5, 1.5, 2.5], "name": ["x", "y", "z"]})
    x = read(df, columns=["a", "b"])
    np.testing.assert_array_equal(x.compute(), [[1, 0.5], [2, 1.5], [3, 2.5]])


def test_read_dask_dataframe_has_known_chunks():
    df = pd.DataFrame({"a": np.arange(10), "b": np.arange(10) * 2.0})
    x = read(dd.from_pandas(df, npartitions=3))
    assert not any(np.isnan(c) for c in x.chunks[0]) and len(x.chunks[1]) == 1
    np.testing.assert_array_equal(x.compute(), df.to_numpy(np.float64))


def test_read_xarray_dataarray(data):
    xr = pytest.importorskip("xarray")
    arr = xr.DataArray(da.from_array(data, chunks=(30, 1)), dims=("sample", "feature"))
    x = read(arr)
    assert len(x.chunks[1]) == 1
    np.testing.assert_array_equal(x.compute(), data)


# ---------------------------------------------------------------- bad input


def test_read_pandas_non_numeric_columns_are_named():
    df = pd.DataFrame({"a": [1.0], "name": ["x"], "when": pd.to_datetime(["2020-01-01"])})
    with pytest.raises(TypeError, match=r"non-numeric.*'name'.*'when'"):
        read(df)


def test_read_dask_dataframe_non_numeric_column_is_named():
    ddf = dd.from_pandas(pd.DataFrame({"a": [1.0, 2.0], "label": ["x", "y"]}), npartitions=1)
    with pytest.raises(TypeError, match="'label'"):
        read(ddf)


def test_read_parquet_non_numeric_column_is_named(tmp_path):
    pd.DataFrame({"a": [1.0], "city": ["Oslo"]}).to_parquet(tmp_path / "f.parquet")
    with pytest.raises(TypeError, match=r"non-numeric.*'city'"):
        read(tmp_path / "f.parquet")


def test_read_parquet_directory_checks_the_column_types_of_every_file(tmp_path):
    (tmp_path / "d.parquet").mkdir()
    pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]}).to_parquet(tmp_path / "d.parquet" / "part.0.parquet")
    pd.DataFrame({"a": ["5", "6"], "b": [7.0, 8.0]}).to_parquet(tmp_path / "d.parquet" / "part.1.parquet")
    with pytest.raises(TypeError, match=r"non-numeric.*part\.1\.parquet.*'a'"):
        read(tmp_path / "d.parquet")


def test_read_parquet_directory_takes_a_dtype_that_holds_every_files_columns(tmp_path):
    (tmp_path / "d.parquet").mkdir()
    pd.DataFrame({"a": np.ones(2, np.float32)}).to_parquet(tmp_path / "d.parquet" / "part.0.parquet")
    pd.DataFrame({"a": np.ones(2, np.float64)}).to_parquet(tmp_path / "d.parquet" / "part.1.parquet")
    assert read(tmp_path / "d.parquet").dtype == np.float64


def test_read_numpy_strings_are_non_numeric():
    with pytest.raises(TypeError, match="non-numeric dtype"):
        read(np.array([["a", "b"]]))


def test_read_complex_data_is_rejected():
    with pytest.raises(TypeError, match="complex dtype"):
        read(np.ones((2, 2), dtype=complex))


@pytest.mark.parametrize("shape", [(5,), (2, 3, 4)])
def test_read_numpy_wrong_ndim_gives_shape(shape):
    with pytest.raises(ValueError, match=r"2-D.*" + str(shape).replace("(", r"\(").replace(")", r"\)")):
        read(np.zeros(shape))


def test_read_dask_3d_array_gives_shape():
    with pytest.raises(ValueError, match=r"\(2, 3, 4\)"):
        read(da.zeros((2, 3, 4)))


def test_read_zarr_1d_array_gives_shape(tmp_path):
    make_zarr(tmp_path / "v.zarr", np.arange(5.0), chunks=(5,))
    with pytest.raises(ValueError, match=r"\(5,\)"):
        read(tmp_path / "v.zarr")


def test_read_pandas_series_is_1d():
    with pytest.raises(ValueError, match="1-D"):
        read(pd.Series([1.0, 2.0]))


@pytest.mark.parametrize("shape", [(0, 3), (4, 0)])
def test_read_empty_array_is_rejected(shape):
    with pytest.raises(ValueError, match="empty"):
        read(np.zeros(shape))


def test_read_empty_parquet_is_rejected(tmp_path):
    pd.DataFrame({"a": np.zeros(0)}).to_parquet(tmp_path / "f.parquet")
    with pytest.raises(ValueError, match="empty"):
        read(tmp_path / "f.parquet")


def test_read_missing_path_is_named(tmp_path):
    missing = tmp_path / "nowhere.zarr"
    with pytest.raises(FileNotFoundError, match="nowhere.zarr"):
        read(missing)


def test_read_unknown_source_type():
    with pytest.raises(TypeError, match="cannot read data from a builtins.list"):
        read([[1.0, 2.0]])


def test_read_unrecognised_file_format(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="cannot tell the format"):
        read(tmp_path / "notes.txt")


def test_read_pandas_missing_column_is_named():
    with pytest.raises(ValueError, match=r"\['zz'\] not found"):
        read(pd.DataFrame({"a": [1.0]}), columns=["a", "zz"])


def test_read_parquet_missing_column_is_named(tmp_path):
    pd.DataFrame({"a": [1.0]}).to_parquet(tmp_path / "f.parquet")
    with pytest.raises(ValueError, match=r"\['zz'\] not found"):
        read(tmp_path / "f.parquet", columns=["zz"])


def test_read_columns_rejected_for_arrays(data):
    with pytest.raises(ValueError, match="columns= only applies"):
        read(data, columns=["a"])


@pytest.mark.parametrize("chunks", [0, -5, 2.5])
def test_read_bad_chunks_value(data, chunks):
    with pytest.raises(ValueError, match="chunks"):
        read(data, chunks=chunks)


# ---------------------------------------------------------------- cache_decision


@pytest.mark.parametrize("cache", [True, False])
def test_cache_decision_forced(cache):
    persist, reason = cache_decision(da.zeros((10**9, 10**3)), cache=cache)
    assert persist is cache and "forced" in reason


def test_cache_decision_rejects_unknown_value():
    with pytest.raises(ValueError, match="cache must be"):
        cache_decision(da.zeros((2, 2)), cache="yes")


def test_cache_decision_auto_numpy_backed_is_free(data):
    persist, reason = cache_decision(read(data))
    assert persist and "already in memory" in reason


def test_cache_decision_auto_persisted_array_is_free(tmp_path, data):
    make_zarr(tmp_path / "x.zarr", data, chunks=(10, 3))
    persist, reason = cache_decision(read(tmp_path / "x.zarr").persist())
    assert persist and "already in memory" in reason


def test_cache_decision_auto_small_file_backed_without_client(tmp_path, data):
    make_zarr(tmp_path / "x.zarr", data, chunks=(10, 3))
    persist, reason = cache_decision(read(tmp_path / "x.zarr"))
    assert persist and "available memory of this machine" in reason


def test_cache_decision_auto_huge_without_client():
    huge = da.zeros((10**9, 10**4), chunks=(10**6, 10**4))  # 80 TB, never computed
    persist, reason = cache_decision(huge)
    assert not persist and "more than half" in reason


def test_cache_decision_auto_uses_worker_memory_limits(small_cluster):
    fits = da.zeros((100 * 2**20 // 8,), chunks=2**20)  # 100 MiB <= 128 MiB
    too_big = da.zeros((200 * 2**20 // 8,), chunks=2**20)  # 200 MiB > 128 MiB
    persist, reason = cache_decision(fits, client=small_cluster)
    assert persist and "1 worker" in reason and "640.00 MiB" in reason
    assert "128.00 MiB: half of 640.00 MiB (memory limit of 1 worker(s)) less 192.00 MiB" in reason
    assert cache_decision(too_big, client=small_cluster)[0] is False


def test_cache_decision_auto_finds_current_client(small_cluster):
    too_big = da.zeros((200 * 2**20 // 8,), chunks=2**20)
    persist, reason = cache_decision(too_big)  # no client passed: the current one is used
    assert not persist and "worker" in reason


def test_cache_decision_auto_unlimited_workers_use_machine_total():
    from distributed import Client, LocalCluster

    with LocalCluster(
        n_workers=1, processes=False, memory_limit=0, dashboard_address=":0"
    ) as cluster, Client(cluster) as client:
        persist, reason = cache_decision(da.zeros((1000, 10)), client=client)
    assert persist and "no memory limit" in reason


def test_cache_decision_auto_unknown_size_does_not_persist(data):
    x = da.from_array(data, chunks=(10, 3)) + 1
    x = x[x[:, 0] > 5]
    assert cache_decision(x) == (False, "auto: data size is unknown (unknown chunk sizes), not persisting")


# ---------------------------------------------------------------- writing Zarr


def test_write_zarr_roundtrip_with_row_chunks(tmp_path, data):
    write_zarr(da.from_array(data, chunks=(25, 3)), tmp_path / "out.zarr")
    z = zarr.open_array(str(tmp_path / "out.zarr"), mode="r")
    assert z.chunks == (25, 3)
    np.testing.assert_array_equal(z[:], data)
    assert hidden_entries(tmp_path) == []


def test_write_zarr_labels_1d(tmp_path):
    labels = da.arange(100, chunks=30) % 4
    write_zarr(labels, tmp_path / "labels.zarr")
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "labels.zarr"))[:], np.arange(100) % 4)


def test_write_zarr_irregular_chunks_are_rechunked(tmp_path, data):
    x = da.from_array(data, chunks=((10, 50, 40), (3,)))
    write_zarr(x, tmp_path / "out.zarr")
    z = zarr.open_array(str(tmp_path / "out.zarr"))
    assert z.chunks == (50, 3)
    np.testing.assert_array_equal(z[:], data)


def test_write_zarr_unknown_chunk_sizes(tmp_path, data):
    x = da.from_array(data, chunks=(20, 3))
    x = x[x[:, 0] > 10]
    write_zarr(x, tmp_path / "out.zarr")
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "out.zarr"))[:], data[data[:, 0] > 10])


def test_write_zarr_name_makes_group_readable_with_component(tmp_path, data):
    write_zarr(da.from_array(data, chunks=20), tmp_path / "res.zarr", name="probabilities")
    np.testing.assert_array_equal(read(tmp_path / "res.zarr", component="probabilities").compute(), data)


def test_write_zarr_memory_url(memfs, data):
    fs, root = memfs
    write_zarr(da.from_array(data, chunks=20), f"{root}/out.zarr", storage_options={})
    np.testing.assert_array_equal(read(f"{root}/out.zarr").compute(), data)
    parent = root.removeprefix("memory:/")
    assert [p.rsplit("/", 1)[-1] for p in fs.ls(parent, detail=False)] == ["out.zarr"]


def test_write_zarr_failure_leaves_no_target_and_no_temp(tmp_path, data):
    x = failing_on_third_chunk(da.from_array(data, chunks=(10, 3)))
    with pytest.raises(RuntimeError, match="injected failure"):
        write_zarr(x, tmp_path / "out.zarr")
    assert os.listdir(tmp_path) == []


def test_write_zarr_failure_on_memory_url_leaves_nothing(memfs, data):
    fs, root = memfs
    x = failing_on_third_chunk(da.from_array(data, chunks=(10, 3)))
    with pytest.raises(RuntimeError, match="injected failure"):
        write_zarr(x, f"{root}/out.zarr")
    assert fs.find(root.removeprefix("memory:/")) == []


def test_write_zarr_existing_target_not_clobbered_and_nothing_computed(tmp_path, data):
    make_zarr(tmp_path / "out.zarr", data, chunks=(10, 3))
    calls = []

    def record(block):
        calls.append(block.shape)
        return block

    x = da.from_array(data * 2, chunks=(10, 3)).map_blocks(record)
    calls.clear()  # map_blocks probes tiny blocks while building the graph
    with pytest.raises(FileExistsError, match="out.zarr"):
        write_zarr(x, tmp_path / "out.zarr")
    assert calls == []
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "out.zarr"))[:], data)


def test_write_zarr_existing_target_checked_before_computing_chunk_sizes(tmp_path, data):
    make_zarr(tmp_path / "out.zarr", data, chunks=(10, 3))
    calls = []

    def record(block):
        calls.append(block.shape)
        return block

    x = da.from_array(data, chunks=(10, 3)).map_blocks(record)
    x = x[x[:, 0] > 5]  # unknown chunk sizes: writing them needs a pass
    calls.clear()
    with pytest.raises(FileExistsError):
        write_zarr(x, tmp_path / "out.zarr")
    assert calls == []


def test_write_zarr_overwrite_replaces_target(tmp_path, data):
    make_zarr(tmp_path / "out.zarr", data, chunks=(10, 3))
    write_zarr(da.from_array(-data, chunks=(50, 3)), tmp_path / "out.zarr", overwrite=True)
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "out.zarr"))[:], -data)
    assert hidden_entries(tmp_path) == []


def test_write_zarr_failed_overwrite_keeps_old_target(tmp_path, data):
    make_zarr(tmp_path / "out.zarr", data, chunks=(10, 3))
    x = failing_on_third_chunk(da.from_array(-data, chunks=(10, 3)))
    with pytest.raises(RuntimeError, match="injected failure"):
        write_zarr(x, tmp_path / "out.zarr", overwrite=True)
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "out.zarr"))[:], data)
    assert hidden_entries(tmp_path) == []


def test_write_zarr_failure_does_not_outlive_running_tasks(tmp_path, data):
    """Sibling tasks still running when one fails must not recreate the temp dir.

    Zarr's local store creates missing directories when writing a chunk, so a
    late write would resurrect the removed temporary path.
    """
    sibling_running = threading.Event()

    def slow_or_fail(block, block_info=None):
        if block_info is None:  # metadata probe while building the graph
            return block
        if block_info[0]["chunk-location"][0] == 0:
            sibling_running.wait(2)  # fail only once another chunk is in flight
            raise RuntimeError("injected failure")
        sibling_running.set()
        time.sleep(0.2)  # then write its part after the failure has been raised
        return block

    x = da.from_array(data, chunks=(10, 3)).map_blocks(slow_or_fail, dtype=data.dtype)
    with dask.config.set(scheduler="threads", num_workers=4):
        with pytest.raises(RuntimeError, match="injected failure"):
            write_zarr(x, tmp_path / "out.zarr")
    time.sleep(0.5)  # a straggler, had one been left running, would have written by now
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- writing Parquet


def test_write_parquet_probabilities_default_columns(tmp_path, data):
    write_parquet(da.from_array(data, chunks=(30, 1)), tmp_path / "p.parquet")
    df = pd.read_parquet(tmp_path / "p.parquet")
    assert list(df.columns) == ["p0", "p1", "p2"]
    np.testing.assert_array_equal(df.to_numpy(), data)


def test_write_parquet_one_file_per_chunk_in_row_order(tmp_path):
    labels = da.arange(120, chunks=10)
    write_parquet(labels, tmp_path / "labels.parquet")
    files = sorted(os.listdir(tmp_path / "labels.parquet"))
    assert len(files) == 12 and files[0] == "part.00000.parquet"
    table = pq.read_table(tmp_path / "labels.parquet")
    assert table.column_names == ["label"]
    np.testing.assert_array_equal(table.column("label").to_numpy(), np.arange(120))


def test_write_parquet_custom_columns_roundtrip_through_read(tmp_path, data):
    write_parquet(da.from_array(data, chunks=40), tmp_path / "s.parquet", columns=["x", "y", "z"])
    np.testing.assert_array_equal(read(tmp_path / "s.parquet", columns=["x", "z"]).compute(), data[:, [0, 2]])


def test_write_parquet_wrong_number_of_columns(tmp_path, data):
    with pytest.raises(ValueError, match="3 distinct column names"):
        write_parquet(da.from_array(data), tmp_path / "s.parquet", columns=["x"])
    assert os.listdir(tmp_path) == []


def test_write_parquet_memory_url(memfs, data):
    _, root = memfs
    write_parquet(da.from_array(data, chunks=30), f"{root}/p.parquet")
    np.testing.assert_array_equal(read(f"{root}/p.parquet").compute(), data)


def test_write_parquet_failure_leaves_no_target_and_no_temp(tmp_path, data):
    x = failing_on_third_chunk(da.from_array(data, chunks=(10, 3)))
    with pytest.raises(RuntimeError, match="injected failure"):
        write_parquet(x, tmp_path / "p.parquet")
    assert os.listdir(tmp_path) == []


def test_write_parquet_existing_target_not_clobbered(tmp_path, data):
    write_parquet(da.from_array(data, chunks=50), tmp_path / "p.parquet")
    with pytest.raises(FileExistsError, match="p.parquet"):
        write_parquet(da.from_array(-data, chunks=50), tmp_path / "p.parquet")
    np.testing.assert_array_equal(pd.read_parquet(tmp_path / "p.parquet").to_numpy(), data)


def test_write_parquet_overwrite_replaces_target(tmp_path, data):
    write_parquet(da.from_array(data, chunks=10), tmp_path / "p.parquet")
    write_parquet(da.from_array(-data, chunks=50), tmp_path / "p.parquet", overwrite=True)
    assert len(os.listdir(tmp_path / "p.parquet")) == 2  # no stale files from the old output
    np.testing.assert_array_equal(pd.read_parquet(tmp_path / "p.parquet").to_numpy(), -data)
    assert hidden_entries(tmp_path) == []


# ---------------------------------------------------------------- write_output


@pytest.mark.parametrize("name", ["out.zarr", "out.parquet", "out.pq"])
def test_write_output_picks_format_by_extension(tmp_path, data, name):
    write_output(da.from_array(data, chunks=50), tmp_path / name)
    np.testing.assert_array_equal(read(tmp_path / name).compute(), data)


def test_write_output_unknown_extension_lists_accepted(tmp_path, data):
    with pytest.raises(ValueError, match=r"\.zarr, \.parquet or \.pq"):
        write_output(da.from_array(data), tmp_path / "out.csv")


def test_write_output_explicit_format_overrides_extension(tmp_path, data):
    write_output(da.from_array(data, chunks=50), tmp_path / "results", format="parquet")
    assert sorted(os.listdir(tmp_path / "results")) == ["part.00000.parquet", "part.00001.parquet"]


def test_column_names_are_a_parquet_sources_columns_without_its_index_and_none_for_arrays(tmp_path):
    df = pd.DataFrame({"b": [1.0, 2.0], "a": [3.0, 4.0]}, index=pd.Index([7, 8], name="key"))
    df.to_parquet(tmp_path / "t.parquet")
    folder = tmp_path / "parts.parquet"
    folder.mkdir()
    df.iloc[:1].to_parquet(folder / "part.0.parquet")
    df.iloc[1:].to_parquet(folder / "part.1.parquet")
    np.save(tmp_path / "x.npy", np.ones((2, 2)))
    da.ones((2, 2)).to_zarr(str(tmp_path / "x.zarr"))
    assert column_names(tmp_path / "t.parquet") == ["b", "a"]
    assert column_names(str(folder)) == ["b", "a"]
    assert read(str(tmp_path / "t.parquet")).shape == (2, 2)  # the same columns as read() reads
    assert column_names(tmp_path / "x.npy") is None
    assert column_names(str(tmp_path / "x.zarr")) is None
    with pytest.raises(FileNotFoundError, match="no such file"):
        column_names(tmp_path / "nothing.parquet")
