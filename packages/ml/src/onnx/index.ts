export { convertToOnnx, type OnnxConversion } from './convert.ts';
export { LAYER_MAPPINGS, type LayerMapping } from './layers.ts';
