// Public library API.
export * from './errors.js';
export * from './rules.js';
export * from './model.js';
export * from './backends/types.js';
export * from './net.js';
export * from './backends/iptables-legacy.js';
