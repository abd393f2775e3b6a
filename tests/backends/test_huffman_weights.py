"""Huffman-coded weights in standalone artifacts (``compress={"entropy": "huffman"}``, ``--entropy huffman``).

The stored record holds each tensor's own values (tables) and Huffman codes of indices into them, so
a context decodes exactly the weights the kernels were compiled with: checked bit for bit on the
host and under qemu (``y = x + W`` at ``x = 0`` returns the weight the kernel read), against the
Python reference decoder, and for corrupt records, which the C decoder refuses without reading
outside them (AddressSanitizer, on mutated records).
"""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

import edgetvm
from edgetvm import emulate
from edgetvm.backends.standalone import (SEGMENT_HUFFMAN, StandaloneLibrary, build_standalone, coded_record,
                                         decode_record)
from edgetvm.backends.standalone.build import HUFFMAN_SOURCE, RUNTIME_DIR
from edgetvm.backends.standalone.plan import WEIGHTS, TensorRef
from edgetvm.compression import cluster_scaled, expand_scaled, kmeans_1d
from edgetvm.errors import ArtifactError

from .standalone_models import small_convnet
from .test_fp16_weights import add_constant_model


def shared_per_row(rng, shape, k) -> np.ndarray:
    """A weight whose rows each hold at most ``k`` values, as ClusterWeights leaves an OIHW conv weight."""
    w = rng.normal(size=shape).astype(np.float32)
    rows = w.reshape(shape[0], -1)
    for row in rows:
        centroids, labels = kmeans_1d(row, k)
        row[:] = centroids[labels]
    return rows.reshape(shape)


def scaled_weight(rng, shape, k, axis=0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A weight as ClusterWeights(scaled=True) leaves it, its channels' ranges 100x apart, with its
    codebook and float16 scales; channel 1 all zero (scale 0)."""
    w = rng.normal(size=shape) * np.geomspace(0.01, 1, shape[axis]).reshape([-1 if a == axis % len(shape) else 1
                                                                              for a in range(len(shape))])
    w = np.moveaxis(w, axis, 0)
    w[1] = 0
    codes, scales = cluster_scaled(np.ascontiguousarray(np.moveaxis(w, 0, axis)).astype(np.float32), k, axis=axis)
    return expand_scaled(codes, scales, axis), np.unique(codes), scales


def test_scaled_records_round_trip_and_beat_a_table_per_channel(rng):
    for shape, axis in (((32, 16, 3, 3), 0), ((48, 24), -1), ((16, 1, 3, 3), 0)):
        w, codebook, scales = scaled_weight(rng, shape, 8, axis)
        ref = TensorRef(WEIGHTS, 0, w.shape, "float32")
        record = coded_record(ref, w.tobytes(), [(codebook[::-1].copy(), scales * 2), (codebook, scales)])
        assert record[:4] == b"EHS1", shape
        assert decode_record(record, w.nbytes) == w.tobytes(), shape
        plain = coded_record(ref, w.tobytes())
        assert plain is None or len(record) < len(plain), shape
        # A codebook that misses one element's bits is not used: the values would not come back.
        off = scales.copy()
        off[0] = np.nextafter(off[0], np.float32(np.inf), dtype=np.float32)
        other = coded_record(ref, w.tobytes(), [(codebook, off)])
        assert other is None or other[:4] == b"EHF1", shape


def test_records_round_trip_in_every_layout(rng):
    cases = {"per tensor": np.round(rng.normal(size=(24, 40)) * 3).astype(np.float32),
             "first axis": shared_per_row(rng, (16, 64), 8),
             "last axis": shared_per_row(rng, (16, 64), 8).T.copy(),
             "int8": np.clip(np.round(rng.normal(size=(32, 48)) * 12), -127, 127).astype(np.int8)}
    cases["per tensor"][0, 0] = -0.0  # a distinct bit pattern: decoding is by bits, not by value
    for name, w in cases.items():
        ref = TensorRef(WEIGHTS, 0, w.shape, str(w.dtype))
        record = coded_record(ref, w.tobytes())
        assert record is not None and len(record) < w.nbytes, name
        assert decode_record(record, w.nbytes) == w.tobytes(), name
    spread = TensorRef(WEIGHTS, 0, (32, 32), "float32")
    assert coded_record(spread, rng.normal(size=(32, 32)).astype(np.float32).tobytes()) is None


def test_host_artifact_decodes_the_clustered_weights_bit_exactly(tmp_path, rng):
    w = shared_per_row(rng, (32, 64), 16)
    compiled = edgetvm.compile(add_constant_model(w), "host", compress={"entropy": "huffman"})
    so = compiled.export(tmp_path / "addw.so", standalone=True)
    np.testing.assert_array_equal(edgetvm.load(so)(np.zeros_like(w)), w)
    build = build_standalone(compiled.scheduled, compiled.imported, compiled.target, tmp_path / "b", "addw",
                             weights="huffman")
    coded = [s for s in build.weights.segments if s.kind == SEGMENT_HUFFMAN]
    assert len(coded) == 1 and len(build.weights.blob) < w.nbytes * 0.6
    assert "decoded from the library's Huffman codes" in so.with_name("addw.h").read_text()


def test_clustered_convnet_matches_the_vm_and_shrinks(tmp_path, rng):
    compiled = edgetvm.compile(small_convnet(), "host", compress={"clusters": 8, "keep": [], "entropy": "huffman"})
    so = compiled.export(tmp_path / "small.so", standalone=True)
    x = rng.uniform(-1, 1, compiled.inputs[0].shape).astype(np.float32)
    for got, want in zip(edgetvm.load(so)(x), compiled(x)):
        np.testing.assert_array_equal(got, want)
    sizes = compiled.report.details["compression"]["bytes"]
    assert sizes["coded"] < sizes["clustered"] < sizes["fp32"] / 4


def corrupt_copy(so: Path, tmp_path: Path, how, mark: bytes = b"EHF1") -> Path:
    data = bytearray(so.read_bytes())
    # The record (float32 elements), not the decoder's "EHF1" string literal.
    start = next(i for i in range(len(data)) if data.startswith(mark + b"\x04", i))
    how(data, start)
    out = tmp_path / f"corrupt_{len(list(tmp_path.iterdir()))}.so"
    out.write_bytes(bytes(data))
    return out


def test_corrupt_records_are_refused_at_load(tmp_path, rng):
    w = shared_per_row(rng, (32, 64), 16)
    compiled = edgetvm.compile(add_constant_model(w), "host", compress={"entropy": "huffman"})
    so = compiled.export(tmp_path / "addw.so", standalone=True)

    def bad_mark(data, start):
        data[start] ^= 0xFF

    def short_payload(data, start):  # the header claims one byte less than the record holds
        (n,) = struct.unpack_from("<I", data, start + 16)
        struct.pack_into("<I", data, start + 16, n - 1)

    def bad_lengths(data, start):  # every symbol 1 bit long: not a prefix code
        data[start + 20:start + 36] = b"\x01" * 16

    for how, message in ((bad_mark, "EHF1"), (short_payload, "size does not match"), (bad_lengths, "prefix code")):
        library = StandaloneLibrary(corrupt_copy(so, tmp_path, how))
        with pytest.raises(ArtifactError, match=f"coded weights: .*{message}.*export it again"):
            library.create_context(1)
    # Through edgetvm.load the SHA-256 of the sidecar refuses the changed file first.
    (tmp_path / "addw.so").write_bytes(corrupt_copy(so, tmp_path, bad_mark).read_bytes())
    with pytest.raises(ArtifactError, match="sha256|SHA-256|changed"):
        edgetvm.load(so)


def scaled_artifact(tmp_path, rng, target="host"):
    """``y = x + W`` with W clustered as a scaled codebook (a scale per row), exported standalone."""
    w = (rng.normal(size=(32, 64)) * np.geomspace(0.01, 1, 32)[:, None]).astype(np.float32)
    compiled = edgetvm.compile(add_constant_model(w), target,
                               compress={"clusters": 8, "scaled": True, "keep": [], "entropy": "huffman"})
    assert len(compiled.codebooks) == 1
    return compiled, compiled.export(tmp_path / "scaled.so", standalone=True)


def test_host_artifact_decodes_scaled_codebooks_bit_exactly(tmp_path, rng):
    compiled, so = scaled_artifact(tmp_path, rng)
    x = np.zeros(compiled.inputs[0].shape, np.float32)
    clustered = compiled(x)
    assert np.unique(clustered).size > 8  # a scale per row: more values than the codebook's
    np.testing.assert_array_equal(edgetvm.load(so)(x), clustered)
    assert b"EHS1\x04" in so.read_bytes()

    def short_payload(data, start):
        (n,) = struct.unpack_from("<I", data, start + 16)
        struct.pack_into("<I", data, start + 16, n - 1)

    def bad_lengths(data, start):
        data[start + 20:start + 28] = b"\x01" * 8

    for how, message in ((short_payload, "size does not match"), (bad_lengths, "prefix code")):
        library = StandaloneLibrary(corrupt_copy(so, tmp_path, how, b"EHS1"))
        with pytest.raises(ArtifactError, match=f"coded weights: .*{message}.*export it again"):
            library.create_context(1)


def test_truncated_scaled_records_are_refused_in_python(rng):
    w, codebook, scales = scaled_weight(rng, (16, 8, 3, 3), 8)
    record = coded_record(TensorRef(WEIGHTS, 0, w.shape, "float32"), w.tobytes(), [(codebook, scales)])
    for cut in (10, 40, len(record) - 1):
        with pytest.raises(ArtifactError, match="coded weights: .*(truncated|shorter)"):
            decode_record(record[:cut], w.nbytes)


FUZZ_DRIVER = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "edgetvm_huffman.h"
/* Cases: u32 record size, u32 output bytes, record. Prints per case "ok <crc>" or "error". Each
 * record and output sits in its own exact-size allocation, so AddressSanitizer sees any overrun. */
int main(int argc, char** argv) {
  FILE* f = fopen(argv[1], "rb");
  unsigned sizes[2];
  while (fread(sizes, 4, 2, f) == 2) {
    unsigned char* record = malloc(sizes[0] ? sizes[0] : 1);
    unsigned char* out = malloc(sizes[1] ? sizes[1] : 1);
    if (fread(record, 1, sizes[0], f) != sizes[0]) return 3;
    char error[128];
    if (edgetvm_huffman_decode(record, sizes[0], out, sizes[1], error, sizeof error) == 0) {
      unsigned long sum = 0;
      for (unsigned i = 0; i < sizes[1]; ++i) sum = sum * 31 + out[i];
      printf("ok %lu\n", sum);
    } else {
      printf("error\n");
    }
    free(record);
    free(out);
  }
  return 0;
}
"""


def mutations(record: bytes, rng) -> list[bytes]:
    out = [record[:n] for n in (0, 4, 19, 20, len(record) // 2, len(record) - 1)]
    for _ in range(300):
        data = bytearray(record)
        for _ in range(int(rng.integers(1, 4))):
            data[int(rng.integers(len(data)))] = int(rng.integers(256))
        out.append(bytes(data))
    out.append(record + b"\0")
    return out


def test_fuzzed_records_never_read_outside_the_buffer(tmp_path, rng):
    driver = tmp_path / "driver.c"
    driver.write_text(FUZZ_DRIVER)
    binary = tmp_path / "fuzz"
    subprocess.run(["gcc", "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                    f"-I{RUNTIME_DIR}", str(driver), str(HUFFMAN_SOURCE), "-o", str(binary)], check=True)
    cases, expected = bytearray(), []
    records = []
    for shape, k in (((8, 40), 4), ((16, 64), 16), ((4, 512), 256)):
        w = shared_per_row(rng, shape, k)
        for layout in (w, w.T.copy()):
            records.append((layout, coded_record(TensorRef(WEIGHTS, 0, layout.shape, "float32"), layout.tobytes())))
    for shape, axis in (((16, 8, 3, 3), 0), ((40, 12), -1)):
        w, codebook, scales = scaled_weight(rng, shape, 16, axis)
        records.append((w, coded_record(TensorRef(WEIGHTS, 0, w.shape, "float32"), w.tobytes(), [(codebook, scales)])))
        assert records[-1][1][:4] == b"EHS1"
    for layout, record in records:
        for data in [record, *mutations(record, rng)]:
            cases += struct.pack("<II", len(data), layout.nbytes) + data
            try:
                expected.append(decode_record(data, layout.nbytes))
            except ArtifactError:
                expected.append(None)
    (tmp_path / "cases.bin").write_bytes(bytes(cases))
    run = subprocess.run([str(binary), str(tmp_path / "cases.bin")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.split("\n")[:-1]
    assert len(lines) == len(expected)
    for line, want in zip(lines, expected):
        # C and the Python reference accept the same records and decode them alike.
        if want is None:
            assert line == "error"
        else:
            checksum = 0
            for byte in want:
                checksum = (checksum * 31 + byte) % 2 ** 64
            assert line == f"ok {checksum}"
    assert sum(w is not None for w in expected) >= 8


@pytest.mark.arm
def test_arm_artifact_decodes_bit_exactly(tmp_path, rng):
    w = shared_per_row(rng, (64, 96), 16)
    compiled = edgetvm.compile(add_constant_model(w), "cortex-a7", compress={"entropy": "huffman"})
    so = compiled.export(tmp_path / "addw.so", standalone=True)
    result = emulate.run_standalone_arm(so, [np.zeros_like(w)], cpu=compiled.target.qemu_cpu)
    np.testing.assert_array_equal(result.outputs[0], w)


@pytest.mark.arm
def test_arm_artifact_decodes_scaled_codebooks_bit_exactly(tmp_path, rng):
    state = rng.bit_generator.state
    compiled, so = scaled_artifact(tmp_path, rng, "cortex-a7")
    rng.bit_generator.state = state
    host, _ = scaled_artifact(tmp_path / "host", rng)  # the same weight, clustered alike (seeded)
    x = np.zeros(compiled.inputs[0].shape, np.float32)
    result = emulate.run_standalone_arm(so, [x], cpu=compiled.target.qemu_cpu)
    np.testing.assert_array_equal(result.outputs[0], host(x))


@pytest.mark.arm
def test_decoding_at_load_costs_less_than_one_inference(tmp_path, rng):
    """Guest instructions of a whole run with coded weights less the same run with weights read in
    place: the decoding, against one inference of the same clustered model."""
    net = edgetvm.compile(small_convnet(hw=48), "cortex-a7", compress={"clusters": 16, "keep": [],
                                                                       "entropy": "huffman"})
    x = rng.uniform(-1, 1, net.inputs[0].shape).astype(np.float32)
    coded = net.export(tmp_path / "coded.so", standalone=True)
    net.weights = "fp32"
    plain = net.export(tmp_path / "plain.so", standalone=True)
    runs = [emulate.run_standalone_arm(so, [x], cpu=net.target.qemu_cpu, count=True) for so in (coded, plain)]
    for got, want in zip(runs[0].outputs, runs[1].outputs):
        np.testing.assert_array_equal(got, want)
    decode = runs[0].instructions - runs[1].instructions
    per_inference = emulate.instructions_per_inference(plain, [x], cpu=net.target.qemu_cpu)
    assert 0 < decode < per_inference, (decode, per_inference)
