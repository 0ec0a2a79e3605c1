// Every failure the package reports has a class here and a stable `code`.
// Native failures keep the errno name and the syscall that failed (like Go's os.SyscallError).

export class EdgeMeshError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** A kernel or libc call failed. `code` is the errno name (EPERM, EAGAIN, ...) unless a more specific stable code applies. */
export class SyscallError extends EdgeMeshError {
  readonly errno: number;
  readonly syscall: string;
  constructor(code: string, errno: number, syscall: string, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.errno = errno;
    this.syscall = syscall;
  }
}

/** The xtables lock could not be taken within the configured wait. */
export class LockTimeoutError extends SyscallError {
  constructor(errno: number, syscall: string, message: string, options?: { cause?: unknown }) {
    super('ELOCKTIMEOUT', errno, syscall, message, options);
  }
}

/** A transaction was rejected before anything was written (bad operation, unknown chain, ...). */
export class TransactionError extends EdgeMeshError {
  /** Index of the offending operation in the transaction, when known. */
  readonly opIndex: number | undefined;
  constructor(message: string, opIndex?: number, options?: { cause?: unknown }) {
    super('ETRANSACTION', message, options);
    this.opIndex = opIndex;
  }
}

/**
 * nftables: the ruleset changed since the read a transaction was planned on, so nothing was
 * written (the batch carried that read's generation id). Read and plan again.
 */
export class GenerationChangedError extends SyscallError {
  constructor(errno: number, syscall: string, message: string, options?: { cause?: unknown }) {
    super('EGENERATION', errno, syscall, message, options);
  }
}

/** Bad user input: a flag, a config field, a CIDR, a manifest. The message names the problem in one line. */
/** Longest ConfigError message; longer ones are cut (the start names the file, field and problem). */
export const MAX_CONFIG_MESSAGE = 500;

/**
 * One line of bounded length: line breaks become spaces, any run of 120+ non-blank characters (a
 * 1 MB label value echoed back, a JSON dump) keeps its first 60 and says how long it was.
 */
export function oneLine(message: string, max = MAX_CONFIG_MESSAGE): string {
  let m = message.replace(/\s*[\r\n]+\s*/g, ' ').replace(/\S{120,}/g, (run) => `${run.slice(0, 60)}...(${run.length} characters)`);
  if (m.length > max) m = `${m.slice(0, max - 3)}...`;
  return m;
}

export class ConfigError extends EdgeMeshError {
  readonly field: string | undefined;
  /** One per problem: a --config file with several mistakes reports them all (the message joins them with newlines). */
  readonly lines: readonly string[];
  /** Each line is made one line of bounded length (oneLine): it ends up as one of the CLI's error lines. */
  constructor(message: string | readonly string[], field?: string, options?: { cause?: unknown }) {
    const lines = (typeof message === 'string' ? [message] : message).map((m) => oneLine(m));
    super('ECONFIG', lines.join('\n'), options);
    this.lines = lines;
    this.field = field;
  }
}

/** An `ip` command managing the proxy's interface failed. */
export class InterfaceError extends EdgeMeshError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('EIFACE', message, options);
  }
}

/** A backend of one family was given another family's desired rules; the same error from every backend. */
export class FamilyMismatchError extends EdgeMeshError {
  readonly given: 'ipv4' | 'ipv6';
  readonly expected: 'ipv4' | 'ipv6';
  constructor(given: 'ipv4' | 'ipv6', expected: 'ipv4' | 'ipv6') {
    super('EFAMILY', `desired rule set is ${given}, backend is ${expected}`);
    this.given = given;
    this.expected = expected;
  }
}

/** The native addon could not be loaded. */
export class NativeLoadError extends EdgeMeshError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ENATIVELOAD', message, options);
  }
}

interface NativeErrorShape {
  message: string;
  code?: unknown;
  errno?: unknown;
  syscall?: unknown;
}

function isNativeError(e: unknown): e is NativeErrorShape & Error {
  return e instanceof Error && typeof (e as NativeErrorShape).code === 'string' && typeof (e as NativeErrorShape).syscall === 'string';
}

/** Turns an error thrown or rejected by the addon into the matching typed error. TypeErrors and others pass through. */
export function fromNative(e: unknown): unknown {
  if (!isNativeError(e)) return e;
  const code = String(e.code);
  const errno = typeof e.errno === 'number' ? e.errno : 0;
  const syscall = String(e.syscall);
  if (code === 'ELOCKTIMEOUT') return new LockTimeoutError(errno, syscall, e.message, { cause: e });
  if (code === 'EGENERATION') return new GenerationChangedError(errno, syscall, e.message, { cause: e });
  if (code === 'ETRANSACTION') {
    const idx = (e as unknown as { opIndex?: unknown }).opIndex;
    return new TransactionError(e.message, typeof idx === 'number' ? idx : undefined, { cause: e });
  }
  return new SyscallError(code, errno, syscall, e.message, { cause: e });
}

/** Awaits a native promise and rethrows its failure as a typed error. */
export async function nativeCall<T>(p: () => Promise<T>): Promise<T> {
  try {
    return await p();
  } catch (e) {
    throw fromNative(e);
  }
}
