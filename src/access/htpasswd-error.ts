/**
 * The htpasswd file's error, apart from the file's reader: main.ts names it in its start-up error
 * handling without loading bcrypt (access control, and its libraries, load only when enabled).
 */

/** Thrown when the file cannot be read or a line is not `user:bcrypt-hash` (names the file and line). */
export class HtpasswdError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'HtpasswdError';
  }
}
