// SO_ORIGINAL_DST for a socket fd of this process (a net.Socket's fd, or one the agent holds).
import { fromNative } from '../errors.js';
import { native } from '../native/load.js';

export interface OriginalDst {
  address: string;
  port: number;
  family: 4 | 6;
}

/**
 * The destination a connection had before DNAT/REDIRECT, read from conntrack through the socket:
 * SO_ORIGINAL_DST (IPv4) or IP6T_SO_ORIGINAL_DST (IPv6). For a connection that was not NATed the
 * kernel returns the socket's own address. Throws SyscallError (ENOENT when conntrack has no
 * entry, ENOPROTOOPT where the option is not available, EBADF, ENOTSOCK, ...), TypeError on a
 * non-integer fd.
 */
export function originalDst(fd: number): OriginalDst {
  try {
    return native().originalDst(fd);
  } catch (e) {
    throw fromNative(e);
  }
}
