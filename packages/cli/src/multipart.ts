// A multipart/form-data body streamed from disk: a dataset zip may be hundreds of MB, so it is
// never read whole. Bytes are counted as fetch pulls them, which is what the upload bar shows
// (fetch pulls as the socket drains, so the count follows the network, not the disk).
import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { basename } from 'node:path';

export interface FilePart {
  name: string;
  path: string;
  size: number;
  contentType: string;
}

export interface MultipartStream {
  contentType: string;
  /** Exact body length: sent as Content-Length so the server can refuse an oversized upload at once. */
  length: number;
  body: AsyncIterable<Uint8Array>;
}

/** `fields` are text parts, sent before the file so the server sees them before the zip. */
export function multipartFromFile(
  fields: Record<string, string>,
  file: FilePart,
  onProgress: (sentFileBytes: number) => void,
): MultipartStream {
  const boundary = `----finetune-cli-${randomBytes(12).toString('hex')}`;
  const head = Buffer.concat([
    ...Object.entries(fields).map(([name, value]) =>
      Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${quote(name)}"\r\n\r\n${value}\r\n`),
    ),
    Buffer.from(
      `--${boundary}\r\nContent-Disposition: form-data; name="${quote(file.name)}"; filename="${quote(basename(file.path))}"\r\n` +
        `Content-Type: ${file.contentType}\r\n\r\n`,
    ),
  ]);
  const tail = Buffer.from(`\r\n--${boundary}--\r\n`);

  async function* body(): AsyncGenerator<Uint8Array> {
    yield head;
    let sent = 0;
    for await (const chunk of createReadStream(file.path, { highWaterMark: 256 * 1024 }) as AsyncIterable<Buffer>) {
      yield chunk;
      sent += chunk.length;
      onProgress(sent);
    }
    yield tail;
  }

  return {
    contentType: `multipart/form-data; boundary=${boundary}`,
    length: head.length + file.size + tail.length,
    body: body(),
  };
}

/** RFC 7578 §4.2: a quote or line break in a name or filename is percent-encoded. */
function quote(value: string): string {
  return value.replace(/"/g, '%22').replace(/\r/g, '%0D').replace(/\n/g, '%0A');
}
