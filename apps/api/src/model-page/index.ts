// The page every model download carries: index.html classifies an image in the browser with the
// model beside it (app.js), on the TensorFlow.js bundle of the version the service itself runs,
// so the unzipped folder works offline from any static file server, with no CDN.
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const here = (name: string) => fileURLToPath(new URL(name, import.meta.url));

/** Zip entry name → file on disk. Resolved at import: a missing bundle fails the API at boot,
 * not halfway through someone's download. */
export const MODEL_PAGE_FILES = {
  'index.html': here('./index.html'),
  'app.js': here('./app.js'),
  'style.css': here('./style.css'),
  // The ES2017 build: dist/tf.min.js (ES5) carries a regenerator polyfill that evaluates a string
  // (`Function("r", "regeneratorRuntime = r")`), which a CSP without 'unsafe-eval' stops, leaving
  // `tf` empty. Every browser TensorFlow.js supports runs ES2017.
  'tf.min.js': createRequire(import.meta.url).resolve('@tensorflow/tfjs/dist/tf.es2017.min.js'),
} as const;
