/**
 * Just enough of the ONNX protobuf encoding to write small inference graphs from code: a
 * model with one graph, float32 initialisers, float tensor inputs and outputs, nodes with int
 * and int-list attributes, and string metadata. Field numbers are those of onnx.proto
 * (ModelProto, GraphProto, NodeProto, AttributeProto, TensorProto, ValueInfoProto). Nothing
 * here reads ONNX; onnxruntime does that.
 */

/** One encoded protobuf field or message body. */
export type ProtoBytes = Buffer;

/** A dimension of a tensor shape: a number is fixed, a string is symbolic (e.g. 'N'). */
export type OnnxDim = number | string;

/** onnx.TensorProto.DataType.FLOAT. */
const DATA_TYPE_FLOAT = 1;

/** onnx.AttributeProto.AttributeType values used here. */
const ATTRIBUTE_INT = 2;
const ATTRIBUTE_INTS = 7;

/** Protobuf wire types. */
const WIRE_VARINT = 0;
const WIRE_LENGTH_DELIMITED = 2;

/** Base-128 varint of an integer; negative values take the 10-byte two's complement form. */
function encodeVarint(value: number | bigint): ProtoBytes {
  let rest = BigInt.asUintN(64, BigInt(value));
  const out: number[] = [];
  while (rest >= 0x80n) {
    out.push(Number(rest & 0x7fn) | 0x80);
    rest >>= 7n;
  }
  out.push(Number(rest));
  return Buffer.from(out);
}

function tag(field: number, wireType: number): ProtoBytes {
  return encodeVarint((field << 3) | wireType);
}

/** An integer field (int32, int64, enum). */
function intField(field: number, value: number): ProtoBytes {
  return Buffer.concat([tag(field, WIRE_VARINT), encodeVarint(value)]);
}

/** A string, bytes or embedded-message field. */
function lengthField(field: number, body: ProtoBytes | string): ProtoBytes {
  const data = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
  return Buffer.concat([tag(field, WIRE_LENGTH_DELIMITED), encodeVarint(data.length), data]);
}

/** Float32 values as little-endian bytes, whatever the platform's byte order. */
function float32LittleEndian(values: Float32Array): ProtoBytes {
  const out = Buffer.allocUnsafe(values.length * 4);
  for (let i = 0; i < values.length; i++) out.writeFloatLE(values[i], i * 4);
  return out;
}

/** A float32 TensorProto (initialiser) holding `values` in raw_data, row-major `shape`. */
export function floatTensor(
  name: string,
  shape: readonly number[],
  values: Float32Array,
): ProtoBytes {
  const count = shape.reduce((product, d) => product * d, 1);
  if (count !== values.length) {
    const got = values.length;
    throw new RangeError(`tensor ${name}: shape [${shape}] needs ${count} values, got ${got}`);
  }
  return Buffer.concat([
    ...shape.map((d) => intField(1, d)), // dims
    intField(2, DATA_TYPE_FLOAT), // data_type
    lengthField(8, name), // name
    lengthField(9, float32LittleEndian(values)), // raw_data
  ]);
}

/** A ValueInfoProto declaring a float tensor graph input or output of the given shape. */
export function floatValueInfo(name: string, shape: readonly OnnxDim[]): ProtoBytes {
  const dims = shape.map((d) =>
    lengthField(1, typeof d === 'number' ? intField(1, d) : lengthField(2, d)),
  );
  const shapeProto = Buffer.concat(dims);
  const tensorType = Buffer.concat([intField(1, DATA_TYPE_FLOAT), lengthField(2, shapeProto)]);
  return Buffer.concat([lengthField(1, name), lengthField(2, lengthField(1, tensorType))]);
}

/** An int attribute of a node. */
export function intAttribute(name: string, value: number): ProtoBytes {
  return Buffer.concat([lengthField(1, name), intField(3, value), intField(20, ATTRIBUTE_INT)]);
}

/** An int-list attribute of a node (e.g. axes). */
export function intsAttribute(name: string, values: readonly number[]): ProtoBytes {
  return Buffer.concat([
    lengthField(1, name),
    ...values.map((v) => intField(8, v)),
    intField(20, ATTRIBUTE_INTS),
  ]);
}

/** A NodeProto in the default operator domain. */
export function graphNode(
  opType: string,
  inputs: readonly string[],
  outputs: readonly string[],
  name: string,
  attributes: readonly ProtoBytes[] = [],
): ProtoBytes {
  return Buffer.concat([
    ...inputs.map((i) => lengthField(1, i)),
    ...outputs.map((o) => lengthField(2, o)),
    lengthField(3, name),
    lengthField(4, opType),
    ...attributes.map((a) => lengthField(5, a)),
  ]);
}

/** Everything a single-graph model is made of, each part already encoded by this module. */
export interface OnnxModelParts {
  graphName: string;
  nodes: readonly ProtoBytes[];
  initializers: readonly ProtoBytes[];
  inputs: readonly ProtoBytes[];
  outputs: readonly ProtoBytes[];
  /** Default-domain opset version, e.g. 13. */
  opset: number;
  /** ModelProto.ir_version; 7 goes with opset 13. */
  irVersion: number;
  producerName: string;
  producerVersion?: string;
  docString?: string;
  /** Free key/value strings stored in ModelProto.metadata_props. */
  metadata?: Readonly<Record<string, string>>;
}

/** Serialises a whole ModelProto. */
export function encodeModel(parts: OnnxModelParts): ProtoBytes {
  const graph = Buffer.concat([
    ...parts.nodes.map((n) => lengthField(1, n)),
    lengthField(2, parts.graphName),
    ...parts.initializers.map((t) => lengthField(5, t)),
    ...parts.inputs.map((v) => lengthField(11, v)),
    ...parts.outputs.map((v) => lengthField(12, v)),
  ]);

  const opsetImport = Buffer.concat([lengthField(1, ''), intField(2, parts.opset)]);
  const metadata = Object.entries(parts.metadata ?? {}).map(([key, value]) =>
    lengthField(14, Buffer.concat([lengthField(1, key), lengthField(2, value)])),
  );

  return Buffer.concat([
    intField(1, parts.irVersion),
    lengthField(2, parts.producerName),
    ...(parts.producerVersion === undefined ? [] : [lengthField(3, parts.producerVersion)]),
    ...(parts.docString === undefined ? [] : [lengthField(6, parts.docString)]),
    lengthField(7, graph),
    lengthField(8, opsetImport),
    ...metadata,
  ]);
}
