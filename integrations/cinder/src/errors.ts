/**
 * Cinder's error format: `{"<faultName>": {"message": ..., "code": <status>}}`, the fault name
 * chosen by status as cinder/api/openstack/wsgi.py does (404 itemNotFound, 400 badRequest...).
 */
const FAULT_NAMES: Record<number, string> = {
  400: 'badRequest', 401: 'unauthorized', 403: 'forbidden', 404: 'itemNotFound', 405: 'badMethod',
  406: 'notAceptable', 409: 'conflictingRequest', 413: 'overLimit', 415: 'badMediaType', 501: 'notImplemented', 503: 'serviceUnavailable',
};

export class CinderError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.name = 'CinderError';
    this.status = status;
  }

  /** The body Cinder answers with. */
  toJSON(): Record<string, { message: string; code: number }> {
    return { [FAULT_NAMES[this.status] ?? 'computeFault']: { message: this.message, code: this.status } };
  }
}

export const notFound = (what: string): CinderError => new CinderError(404, `${what} could not be found.`);
export const badRequest = (message: string): CinderError => new CinderError(400, message);
export const conflict = (message: string): CinderError => new CinderError(409, message);
