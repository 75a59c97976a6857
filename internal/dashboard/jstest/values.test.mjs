// Unit tests of the page's value handling (static/values.js), run by
// `make test` with node's own test runner; the page as a whole is tested in
// headless Chromium by systest/dashboard_test.go.
import assert from "node:assert/strict";
import { test } from "node:test";

import { display, editable, parseInput, summary, tensorElements } from "../static/values.js";

const b64 = (bytes) => Buffer.from(bytes).toString("base64");

test("tensorElements decodes every dtype little-endian", () => {
  const le = (n, size, signed) => {
    const b = Buffer.alloc(size);
    if (size === 8) signed ? b.writeBigInt64LE(BigInt(n)) : b.writeBigUInt64LE(BigInt(n));
    else if (size === 1) signed ? b.writeInt8(n) : b.writeUInt8(n);
    else if (size === 2) signed ? b.writeInt16LE(n) : b.writeUInt16LE(n);
    else signed ? b.writeInt32LE(n) : b.writeUInt32LE(n);
    return b;
  };
  assert.deepEqual(tensorElements("int8", le(-3, 1, true)), [-3]);
  assert.deepEqual(tensorElements("uint8", le(250, 1, false)), [250]);
  assert.deepEqual(tensorElements("int16", le(-300, 2, true)), [-300]);
  assert.deepEqual(tensorElements("uint16", le(65000, 2, false)), [65000]);
  assert.deepEqual(tensorElements("int32", le(-70000, 4, true)), [-70000]);
  assert.deepEqual(tensorElements("uint32", le(4000000000, 4, false)), [4000000000]);
  assert.deepEqual(tensorElements("int64", le(-5, 8, true)), [-5]);
  assert.deepEqual(tensorElements("uint64", le(7, 8, false)), [7]);
  assert.deepEqual(tensorElements("bool", new Uint8Array([0, 1, 2])), [0, 1, 1]);
  const f32 = Buffer.alloc(8);
  f32.writeFloatLE(1.5, 0);
  f32.writeFloatLE(-2, 4);
  assert.deepEqual(tensorElements("float32", f32), [1.5, -2]);
  const f64 = Buffer.alloc(8);
  f64.writeDoubleLE(Math.PI);
  assert.deepEqual(tensorElements("float64", f64), [Math.PI]);
  // float16: 1.0 = 0x3c00, -2.0 = 0xc000, 2^-24 (smallest subnormal) = 0x0001, inf = 0x7c00
  assert.deepEqual(tensorElements("float16", new Uint8Array([0x00, 0x3c, 0x00, 0xc0, 0x01, 0x00, 0x00, 0x7c])), [1, -2, 2 ** -24, Infinity]);
  assert.throws(() => tensorElements("float32", new Uint8Array(3)), /not a whole number/);
  assert.throws(() => tensorElements("complex64", new Uint8Array(8)), /unknown dtype/);
});

test("summary gives shape, dtype, elements and L2 norm", () => {
  assert.deepEqual(summary("embedding", [3, 4]), { shape: [2], dtype: "float64", elements: 2, norm: 5 });
  const t = Buffer.alloc(16);
  [1, 2, 2, 4].forEach((x, i) => t.writeFloatLE(x, 4 * i));
  assert.deepEqual(summary("tensor", { shape: [2, 2], dtype: "float32", data: b64(t) }), { shape: [2, 2], dtype: "float32", elements: 4, norm: 5 });
  assert.equal(summary("float", 1.5), null);
  assert.ok(Number.isNaN(summary("embedding", [1, "NaN"]).norm));
});

test("display shows values in one line", () => {
  assert.equal(display("float", 1.5), "1.5");
  assert.equal(display("float", "NaN"), "NaN");
  assert.equal(display("string", "a b"), '"a b"');
  assert.equal(display("boolean", false), "false");
  assert.equal(display("integer", null), "—");
  assert.equal(display("embedding", [3, 4]), "embedding [2] float64, ‖x‖₂ = 5");
});

test("parseInput builds protobuf JSON values", () => {
  assert.deepEqual(parseInput("integer", " -12 "), { intValue: "-12" });
  assert.deepEqual(parseInput("integer", "9007199254740993"), { intValue: "9007199254740993" }); // past 2^53, kept exact
  assert.throws(() => parseInput("integer", "1.5"), /integer/);
  assert.deepEqual(parseInput("float", "1e-3"), { floatValue: 0.001 });
  assert.deepEqual(parseInput("float", "-Infinity"), { floatValue: "-Infinity" });
  assert.throws(() => parseInput("float", "warm"), /a float is a number/);
  assert.throws(() => parseInput("float", ""), /a float is a number/);
  assert.deepEqual(parseInput("boolean", "true"), { boolValue: true });
  assert.throws(() => parseInput("boolean", "yes"), /true or false/);
  assert.deepEqual(parseInput("string", " kept as typed "), { stringValue: " kept as typed " });
  assert.deepEqual(parseInput("choice", "fast"), { stringValue: "fast" });
  assert.deepEqual(parseInput("embedding", "[0.5, 1]"), { embeddingValue: { values: [0.5, 1] } });
  assert.throws(() => parseInput("embedding", '{"a": 1}'), /JSON list/);
  assert.throws(() => parseInput("tensor", "[1, 2]"), /a tensor is JSON/);
});

test("a tensor round-trips through the form", () => {
  for (const dtype of ["float32", "float64", "int32", "int64", "uint8", "bool"]) {
    const values = dtype === "bool" ? [1, 0, 1, 1] : [1, 0, 3, 4];
    const v = parseInput("tensor", JSON.stringify({ shape: [2, 2], dtype, values })).tensorValue;
    assert.deepEqual(v.shape, ["2", "2"]);
    const back = { shape: v.shape.map(Number), dtype: v.dtype, data: v.data };
    assert.deepEqual(JSON.parse(editable("tensor", back)), { shape: [2, 2], dtype, values }, dtype);
  }
  const data = b64(new Uint8Array([1, 2]));
  assert.deepEqual(parseInput("tensor", JSON.stringify({ shape: [2], dtype: "uint8", data })).tensorValue.data, data);
  assert.throws(() => parseInput("tensor", JSON.stringify({ shape: [1], dtype: "float16", values: [1] })), /cannot encode float16/);
});
