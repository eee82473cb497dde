import pino, { type Logger } from 'pino';

export type { Logger };

/** JSON logs on stdout. API keys and signing secrets are never passed to the logger. */
export function createLogger(level: string): Logger {
  return pino({ level, base: { service: 'herald' }, redact: ['req.headers.authorization', 'secret'] });
}
