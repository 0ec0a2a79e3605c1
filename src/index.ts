// Public library API.
export * from './errors.js';
export * from './rules.js';
export * from './model.js';
export * from './backends/types.js';
