// Values as the page shows them. They arrive in the watch shape of
// `varbridge watch -o json`: type "float", ..., values decoded (numbers,
// "NaN"/"Infinity" for non-finite floats, an embedding as a list, a tensor
// as {shape, dtype, data: base64 of little-endian bytes}). Writes go out as
// protobuf JSON Values ({"floatValue": 1.5}, int64 as strings).

// numeric is a value as a plot point: a finite number, or null for a gap.
export function numeric(v) {
  return typeof v === "number" && Number.isFinite(v) ? v : null;
}

const itemSize = { bool: 1, int8: 1, uint8: 1, int16: 2, uint16: 2, float16: 2,
  int32: 4, uint32: 4, float32: 4, int64: 8, uint64: 8, float64: 8 };

function float16(bits) {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >> 10) & 0x1f;
  const frac = bits & 0x3ff;
  if (exp === 0) return sign * 2 ** -14 * (frac / 1024);
  if (exp === 0x1f) return frac ? NaN : sign * Infinity;
  return sign * 2 ** (exp - 15) * (1 + frac / 1024);
}

// tensorElements decodes a tensor's little-endian bytes into numbers.
export function tensorElements(dtype, bytes) {
  const size = itemSize[dtype];
  if (!size) throw new Error(`unknown dtype ${dtype}`);
  if (bytes.length % size) throw new Error(`${bytes.length} bytes is not a whole number of ${dtype}`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const read = {
    bool: (o) => (dv.getUint8(o) ? 1 : 0), int8: (o) => dv.getInt8(o), uint8: (o) => dv.getUint8(o),
    int16: (o) => dv.getInt16(o, true), uint16: (o) => dv.getUint16(o, true), float16: (o) => float16(dv.getUint16(o, true)),
    int32: (o) => dv.getInt32(o, true), uint32: (o) => dv.getUint32(o, true), float32: (o) => dv.getFloat32(o, true),
    int64: (o) => Number(dv.getBigInt64(o, true)), uint64: (o) => Number(dv.getBigUint64(o, true)),
    float64: (o) => dv.getFloat64(o, true),
  }[dtype];
  const out = new Array(bytes.length / size);
  for (let i = 0; i < out.length; i++) out[i] = read(i * size);
  return out;
}

function base64Bytes(s) {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function l2(xs) {
  let sum = 0;
  for (const x of xs) sum += x * x;
  return Math.sqrt(sum);
}

// summary describes an embedding or a tensor: shape, dtype, element count
// and L2 norm (NaN when an element is not finite). null for other values.
export function summary(type, v) {
  if (type === "embedding" && Array.isArray(v)) {
    const xs = v.map((x) => (typeof x === "number" ? x : Number(x)));
    return { shape: [xs.length], dtype: "float64", elements: xs.length, norm: l2(xs) };
  }
  if (type === "tensor" && v && typeof v === "object" && "dtype" in v) {
    const xs = tensorElements(v.dtype, base64Bytes(v.data ?? ""));
    return { shape: v.shape ?? [], dtype: v.dtype, elements: xs.length, norm: l2(xs) };
  }
  return null;
}

export function formatNumber(x) {
  if (!Number.isFinite(x)) return String(x);
  return Math.abs(x) >= 1e6 || (x !== 0 && Math.abs(x) < 1e-4) ? x.toExponential(4) : String(+x.toPrecision(6));
}

// display is a value as one short line of text.
export function display(type, v) {
  if (v === null || v === undefined) return "—";
  const s = summary(type, v);
  if (s) return `${type} [${s.shape.join("×")}] ${s.dtype}, ‖x‖₂ = ${formatNumber(s.norm)}`;
  if (typeof v === "string") return type === "float" ? v : JSON.stringify(v);
  return String(v);
}

// editable is a value as text the set form starts from.
export function editable(type, v) {
  if (v === null || v === undefined) return "";
  if (type === "embedding") return JSON.stringify(v);
  if (type === "tensor") {
    try {
      return JSON.stringify({ shape: v.shape, dtype: v.dtype, values: tensorElements(v.dtype, base64Bytes(v.data ?? "")) });
    } catch {
      return JSON.stringify(v);
    }
  }
  return String(v);
}

function encodeTensor(shape, dtype, values) {
  const size = itemSize[dtype];
  if (!size) throw new Error(`unknown dtype "${dtype}"`);
  const buf = new ArrayBuffer(values.length * size);
  const dv = new DataView(buf);
  values.forEach((x, i) => {
    const o = i * size;
    switch (dtype) {
      case "bool": dv.setUint8(o, x ? 1 : 0); break;
      case "int8": dv.setInt8(o, x); break;
      case "uint8": dv.setUint8(o, x); break;
      case "int16": dv.setInt16(o, x, true); break;
      case "uint16": dv.setUint16(o, x, true); break;
      case "int32": dv.setInt32(o, x, true); break;
      case "uint32": dv.setUint32(o, x, true); break;
      case "int64": dv.setBigInt64(o, BigInt(x), true); break;
      case "uint64": dv.setBigUint64(o, BigInt(x), true); break;
      case "float32": dv.setFloat32(o, x, true); break;
      case "float64": dv.setFloat64(o, x, true); break;
      default: throw new Error(`the form cannot encode ${dtype}; give "data" as base64 instead of "values"`);
    }
  });
  let bin = "";
  for (const b of new Uint8Array(buf)) bin += String.fromCharCode(b);
  return btoa(bin);
}

// parseInput turns the set form's text into a protobuf JSON Value for a
// variable of the given type. It only reads the text; whether the value is
// allowed (constraints) is the server's decision, and its error is shown.
export function parseInput(type, text) {
  const t = text.trim();
  switch (type) {
    case "integer":
      if (!/^[-+]?\d+$/.test(t)) throw new Error("an integer is digits, optionally signed");
      return { intValue: t.replace(/^\+/, "") };
    case "float": {
      if (["NaN", "Infinity", "-Infinity"].includes(t)) return { floatValue: t };
      const x = Number(t);
      if (t === "" || Number.isNaN(x)) throw new Error("a float is a number such as 0.5 or 1e-3");
      return { floatValue: x };
    }
    case "boolean":
      if (t !== "true" && t !== "false") throw new Error("a boolean is true or false");
      return { boolValue: t === "true" };
    case "embedding": {
      const xs = JSON.parse(t);
      if (!Array.isArray(xs)) throw new Error("an embedding is a JSON list of numbers, such as [0.1, 0.2]");
      return { embeddingValue: { values: xs } };
    }
    case "tensor": {
      const o = JSON.parse(t);
      if (!o || typeof o !== "object" || !Array.isArray(o.shape) || typeof o.dtype !== "string") {
        throw new Error('a tensor is JSON: {"shape": [2, 2], "dtype": "float32", "values": [1, 2, 3, 4]} (or "data": base64)');
      }
      const data = Array.isArray(o.values) ? encodeTensor(o.shape, o.dtype, o.values) : String(o.data ?? "");
      return { tensorValue: { shape: o.shape.map(String), dtype: o.dtype, data } };
    }
    default:
      return { stringValue: text };
  }
}
