// `npm run build`: the JavaScript production runs with plain node (no tsx).
//
// tsc builds the API and the worker and, through their project references, every workspace
// package they import: each src/ into the dist/ beside it (`./x.ts` imports are rewritten to
// `./x.js`). Incremental: an unchanged package is not compiled again. Then every file of a src/
// that is not TypeScript (the model page's html/js/css, …) is copied to the same place in its
// dist/, since the compiled modules read them next to themselves.
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The programs production starts; tsc follows their references to the packages. */
const ENTRY_PROJECTS = ['apps/api/tsconfig.build.json', 'apps/worker/tsconfig.build.json'];

const root = fileURLToPath(new URL('..', import.meta.url));
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');

try {
  execFileSync(process.execPath, [tsc, '--build', ...ENTRY_PROJECTS], { cwd: root, stdio: 'inherit' });
} catch {
  // tsc has printed the errors.
  process.exit(1);
}

for (const parent of ['apps', 'packages']) {
  for (const name of readdirSync(join(root, parent))) {
    const pkg = join(root, parent, name);
    if (!existsSync(join(pkg, 'tsconfig.build.json'))) continue;
    cpSync(join(pkg, 'src'), join(pkg, 'dist'), {
      recursive: true,
      filter: (source) => !source.endsWith('.ts'),
    });
  }
}
