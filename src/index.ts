// Public library API.
export * from './errors.js';
export * from './rules.js';
export * from './model.js';
export * from './net.js';
export * from './backends/types.js';
export * from './backends/iptables-legacy.js';
export * from './backends/iptables-nft.js';
export * from './backends/iptables.js';
export * from './backends/nftables.js';
export * from './backends/detect.js';
export type * from './backends/nft-native.js';
