// Classifies an image dropped on (or chosen in) the page with the model in this folder, in the
// browser. Preprocessing follows the finetune API's before /predict, so both give the same
// answer for the same image: EXIF orientation applied, sRGB, resized to cover a size × size
// square and centre-cropped, RGB with pixel values / 255. The API resizes with libvips'
// Lanczos filter and this page with the canvas's, so scores on resized images can differ in
// the third decimal; an image already at the model's input size gives the same numbers.
'use strict';

/** As many classes as the API's /predict lists in `top`. */
const TOP_K = 5;
/** The label below the confidence threshold, as /predict answers. */
const UNKNOWN = 'unknown';
/** Probabilities that underflowed to 0 get this floor before the log, as the API does. */
const PROBABILITY_FLOOR = 1e-45;

const $ = (id) => document.getElementById(id);
const statusLine = $('status');
const input = $('file');
const drop = $('drop');
const seen = $('seen');

function say(text, { error = false } = {}) {
  statusLine.textContent = text;
  statusLine.classList.toggle('error', error);
  statusLine.setAttribute('role', error ? 'alert' : 'status');
}

async function fetchJson(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

/** The model, its labels and its input size, checked against each other. */
async function load() {
  if (location.protocol === 'file:') {
    throw new Error(
      'A page opened from disk may not read the files beside it. Serve this folder instead, e.g. ' +
        '"python3 -m http.server" or "npx http-server" in it, and open the address it prints.',
    );
  }
  const [labels, metadata, model] = await Promise.all([fetchJson('labels.json'), fetchJson('metadata.json'), tf.loadLayersModel('model.json')]);
  const [, height, width, channels] = model.inputs[0].shape;
  const size = metadata.input?.shape?.[1] ?? height;
  if (height !== width || channels !== 3 || size !== height) {
    throw new Error(`the model takes [${model.inputs[0].shape}], not ${size} × ${size} RGB images`);
  }
  const classes = model.outputs[0].shape.at(-1);
  if (classes !== labels.length) throw new Error(`the model has ${classes} outputs but labels.json names ${labels.length}`);
  return { model, labels, metadata, size };
}

/**
 * The image as the model's input (size × size × 3 floats in [0, 1], row-major), drawn on the
 * `seen` canvas on the way. createImageBitmap applies EXIF orientation and converts to sRGB.
 */
async function pixels(file, size) {
  const bitmap = await createImageBitmap(file);
  seen.width = size;
  seen.height = size;
  const context = seen.getContext('2d', { willReadFrequently: true });
  context.imageSmoothingEnabled = true;
  context.imageSmoothingQuality = 'high';
  try {
    const { width, height } = bitmap;
    const [sx, sy, side] = coverCrop(width, height, size);
    context.clearRect(0, 0, size, size);
    context.drawImage(bitmap, sx, sy, side, side, 0, 0, size, size);
  } finally {
    bitmap.close();
  }
  // RGBA bytes → RGB floats. A transparent pixel reads as black here; the API keeps whatever
  // colour the file stores under it, so images with transparency may score differently.
  const { data } = context.getImageData(0, 0, size, size);
  const out = new Float32Array(size * size * 3);
  for (let i = 0, j = 0; i < data.length; i += 4) {
    out[j++] = data[i] / 255;
    out[j++] = data[i + 1] / 255;
    out[j++] = data[i + 2] / 255;
  }
  return out;
}

/**
 * The square of a width × height image that a cover resize to size × size keeps, as sharp picks
 * it: the short side scaled to `size`, the long one to a rounded length, then a crop at a whole
 * (resized) pixel, (long - size + 1) / 2 rounded down. Centring at a fractional offset instead
 * would blend neighbouring columns and shift the image by half a pixel.
 */
function coverCrop(width, height, size) {
  const short = Math.min(width, height);
  const long = Math.max(width, height);
  const scale = size / short;
  const offset = Math.min(Math.floor((Math.round(long * scale) - size + 1) / 2) / scale, long - short);
  return width >= height ? [offset, 0, short] : [0, offset, short];
}

/**
 * Temperature scaling fitted on the validation split (metadata.calibration): softmax(log p / T),
 * computed as the API computes it, so the page shows the same calibrated scores as /predict.
 */
function calibrated(probabilities, temperature) {
  if (!temperature || temperature === 1) return probabilities;
  const logits = Array.from(probabilities, (p) => Math.log(Math.max(p, PROBABILITY_FLOOR)) / temperature);
  const max = Math.max(...logits);
  const sum = logits.reduce((s, z) => s + Math.exp(z - max), 0);
  return Float32Array.from(logits, (z) => Math.exp(z - max) / sum);
}

/** Scores, best first (ties by label order, as the API ranks them). */
async function classify({ model, labels, size, metadata }, image) {
  const output = tf.tidy(() => model.predict(tf.tensor4d(image, [1, size, size, 3])));
  const scores = calibrated(await output.data(), metadata.calibration?.temperature);
  output.dispose();
  return Array.from(scores, (score, i) => ({ label: labels[i], score, i }))
    .sort((a, b) => b.score - a.score || a.i - b.i)
    .slice(0, Math.min(TOP_K, labels.length));
}

const percent = (score) => `${(score * 100).toFixed(1)} %`;

/** The answer's label: the top class, or "unknown" below the model's confidence threshold. */
function answer(top, threshold) {
  return typeof threshold === 'number' && top[0].score < threshold ? UNKNOWN : top[0].label;
}

function show(top, label) {
  $('top-label').textContent = label;
  const topScore = $('top-score');
  topScore.value = String(top[0].score);
  topScore.textContent = percent(top[0].score);
  $('top-k').replaceChildren(
    ...top.map(({ label, score }) => {
      const item = document.createElement('li');
      const name = document.createElement('span');
      name.textContent = label;
      const bar = document.createElement('meter');
      bar.min = 0;
      bar.max = 1;
      bar.value = score;
      bar.setAttribute('aria-label', label);
      const number = document.createElement('span');
      number.className = 'num';
      number.textContent = percent(score);
      item.append(name, bar, number);
      return item;
    }),
  );
  $('output').hidden = false;
}

async function main() {
  let loaded;
  try {
    loaded = await load();
  } catch (error) {
    say(`The model did not load: ${error.message}`, { error: true });
    return;
  }
  const { labels, metadata, size } = loaded;
  const about = [`${labels.length} classes`, `${size} × ${size} input`];
  if (metadata.baseModel) about.push(`fine-tuned from ${metadata.baseModel}`);
  if (typeof metadata.evaluation?.accuracy === 'number') about.push(`validation accuracy ${percent(metadata.evaluation.accuracy)}`);
  if (typeof metadata.testEvaluation?.accuracy === 'number') about.push(`test accuracy ${percent(metadata.testEvaluation.accuracy)}`);
  if (typeof metadata.confidenceThreshold === 'number') about.push(`"${UNKNOWN}" below ${percent(metadata.confidenceThreshold)}`);
  $('about').textContent = `${about.join(', ')}. Runs in this browser with TensorFlow.js ${tf.version.tfjs} (${tf.getBackend()}); images never leave the page.`;

  // Only the newest image's answer is shown, however the predictions finish.
  let latest = 0;
  async function run(file) {
    if (!file) return;
    const ticket = ++latest;
    say(`Classifying ${file.name}…`);
    try {
      const top = await classify(loaded, await pixels(file, size));
      if (ticket !== latest) return;
      const label = answer(top, metadata.confidenceThreshold);
      show(top, label);
      say(`${file.name}: ${label}`);
    } catch (error) {
      if (ticket === latest) say(`${file.name} could not be classified: ${error.message}`, { error: true });
    }
  }

  input.addEventListener('change', () => run(input.files?.[0]));
  // A file dropped anywhere on the page is classified, not opened in place of it.
  document.addEventListener('dragover', (event) => {
    event.preventDefault();
    drop.classList.add('over');
  });
  document.addEventListener('dragleave', (event) => {
    if (event.relatedTarget === null) drop.classList.remove('over');
  });
  document.addEventListener('drop', (event) => {
    event.preventDefault();
    drop.classList.remove('over');
    void run(event.dataTransfer?.files?.[0]);
  });
  input.disabled = false;
  say('Ready: drop an image on the page, or choose one.');
}

void main();
