// Declaration of the addon's certificate surface (native/certs_binding.cc over certs_core.h).
// Only src/tunnel/ calls these; names, paths and options are validated there first.
// All three are synchronous: a node certificate takes about a millisecond.
// A wrong JS type throws a TypeError naming the field ("spec.caKeyPem must be a string"); a core
// failure throws an Error whose `code` is one of NativeCertErrorCode.

export interface NativeCaSpec {
  /** Default "edgemesh cluster CA"; 1 to 64 characters. */
  commonName?: string;
  /** Seconds relative to now (default -3600: back-dated for clocks that lag a little). */
  notBeforeOffsetSeconds?: number;
  /** Seconds relative to now (default 10 years). */
  notAfterOffsetSeconds?: number;
}

export interface NativeIssueSpec {
  caCertPem: string;
  caKeyPem: string;
  /** CN and DNS subjectAltName; [a-z0-9.-], at most 253 characters (no CN beyond X.509's 64). */
  name: string;
  /** Seconds relative to now (default -3600). */
  notBeforeOffsetSeconds?: number;
  /** Seconds relative to now (default 1 year); may be negative, for an expired certificate. */
  notAfterOffsetSeconds?: number;
}

export interface NativeKeyPair {
  certPem: string;
  /** PKCS#8, unencrypted. */
  keyPem: string;
}

export interface NativeCertInfo {
  /** '' when the subject has no CN. */
  subjectCN: string;
  dnsNames: string[];
  /** Uppercase hex in whole bytes, exactly as `openssl x509 -noout -serial` prints it. */
  serialHex: string;
  /** ISO-8601 UTC, second precision: "2026-01-31T12:00:00Z". */
  notBefore: string;
  notAfter: string;
  issuerCN: string;
  /** basicConstraints CA:TRUE. */
  isCa: boolean;
}

export type NativeCertErrorCode = 'EBADCERT' | 'EBADKEY' | 'EKEYMISMATCH' | 'ENOTCA' | 'EINVAL' | 'ECERT';

export interface NativeCertsBinding {
  generateCa(spec?: NativeCaSpec): NativeKeyPair;
  issueCert(spec: NativeIssueSpec): NativeKeyPair;
  /** The first certificate of the PEM text. */
  certInfo(pem: string): NativeCertInfo;
}
