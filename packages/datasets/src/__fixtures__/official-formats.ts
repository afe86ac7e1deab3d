// Writers of the official file formats, for tests: each writes the bytes the format's documentation describes.

/** An unsigned-byte IDX file written as the format says: 00 00 08 rank, big-endian sizes, values. */
export function writeIdx(dimensions: number[], values: ArrayLike<number>): Uint8Array {
  const header = new Uint8Array(4 + 4 * dimensions.length);
  header.set([0, 0, 8, dimensions.length]);
  const view = new DataView(header.buffer);
  dimensions.forEach((size, axis) => view.setUint32(4 + 4 * axis, size, false));
  const bytes = new Uint8Array(header.length + values.length);
  bytes.set(header);
  bytes.set(Array.from(values), header.length);
  return bytes;
}

/** CIFAR binary records: label byte(s), then the red, green and blue planes of 1024 bytes each. */
export function writeCifarRecords(records: { labels: number[]; pixel: (channel: number, row: number, column: number) => number }[]): Uint8Array {
  const labelBytes = records[0]!.labels.length;
  const size = labelBytes + 3072;
  const bytes = new Uint8Array(records.length * size);
  records.forEach((record, example) => {
    bytes.set(record.labels, example * size);
    for (let channel = 0; channel < 3; channel++) {
      for (let row = 0; row < 32; row++) {
        for (let column = 0; column < 32; column++) {
          bytes[example * size + labelBytes + channel * 1024 + row * 32 + column] = record.pixel(channel, row, column);
        }
      }
    }
  });
  return bytes;
}

