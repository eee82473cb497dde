import type { KV } from 'nats';
import { StartupError } from '../errors';
import { isTransientClusterError, isWrongLastSequence, natsReason } from './nats-errors';

/** The key of the layout record in `<prefix>_meta`. */
export const LAYOUT_KEY = 'layout';
/** Compare-and-set rounds before recording gives up (other nodes starting at once each take one). */
const RECORD_ATTEMPTS = 10;

/** The stream behind a KV bucket (JetStream names it so). */
export const bucketStream = (bucket: string) => `KV_${bucket}`;

/**
 * Which of Herald's streams and buckets were made under a prefix, as the layout record lists them
 * (`created`: stream names, a bucket as `KV_<bucket>`). One made before and missing now was deleted
 * behind Herald: making it again, empty, would lose what it held without a word (the subscriptions,
 * the dead letters, the idempotency records), so a starting node refuses unless told otherwise.
 */
export interface MadeStreams {
  /**
   * Refuses to go on when `stream` was made before and is gone, unless missing ones may be made
   * again: then true (it is being made again, and what it held is lost).
   */
  checkPresent(stream: string, exists: boolean, holds: string): boolean;
  /** Adds streams (made or found now) to the layout's list; a node recording at the same time is merged with. */
  record(streams: readonly string[], patch?: Record<string, unknown>): Promise<void>;
}

export function madeStreams(
  meta: KV,
  opts: {
    prefix: string;
    metaBucket: string;
    created: readonly string[] | undefined;
    recreateMissing: boolean;
    onRecreate: (stream: string) => void;
  },
): MadeStreams {
  const made = new Set(opts.created ?? []);
  return {
    checkPresent(stream, exists, holds) {
      if (exists || !made.has(stream)) return false;
      if (opts.recreateMissing) {
        opts.onRecreate(stream);
        return true;
      }
      throw new StartupError(
        `the JetStream stream ${stream} is missing, but Herald made it before under HERALD_NATS_PREFIX=${opts.prefix}: ` +
          `${holds} would be lost without a word if it were made again, empty. Restore it, or start with ` +
          'HERALD_RECOVERY=recreate-missing to make it again and accept that loss',
      );
    },
    async record(streams, patch = {}) {
      const cannot = (err: unknown) =>
        new StartupError(`cannot record the streams Herald made in ${opts.metaBucket} on the JetStream cluster: ${natsReason(err)}`, {
          retryable: isTransientClusterError(err),
        });
      for (let attempt = 0; attempt < RECORD_ATTEMPTS; attempt++) {
        const entry = await meta.get(LAYOUT_KEY).catch((err: unknown) => {
          throw cannot(err);
        });
        if (!entry || entry.operation !== 'PUT') throw new StartupError(`the layout record in ${opts.metaBucket} is gone`);
        const layout = entry.json<Record<string, unknown> & { created?: string[] }>();
        const listed = new Set(layout.created ?? []);
        const missing = streams.filter((s) => !listed.has(s));
        const patched = Object.entries(patch).some(([k, v]) => layout[k] !== v);
        if (missing.length === 0 && !patched) return;
        try {
          await meta.update(LAYOUT_KEY, JSON.stringify({ ...layout, ...patch, created: [...listed, ...missing] }), entry.revision);
          return;
        } catch (err) {
          if (!isWrongLastSequence(err)) throw cannot(err); // else another node recorded meanwhile: read it again and merge
        }
      }
      throw new StartupError(`could not record the streams Herald made in ${opts.metaBucket}: it kept changing`);
    },
  };
}
