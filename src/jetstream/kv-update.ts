import { headers, type JetStreamClient, type KV, type KvDeleteOptions } from 'nats';
import { isWrongLastSequence } from './nats-errors';

/**
 * The error a lost compare-and-set is reported with: shaped as JetStream's own "wrong last
 * sequence" (err_code 10071), so every caller of `kv.update` handles both alike.
 */
export class LostUpdate extends Error {
  readonly api_error = { code: 400, err_code: 10071, description: this.message };
  constructor(key: string, revision: number) {
    super(`wrong last sequence: another write from revision ${revision} of ${key} was stored first`);
    this.name = 'LostUpdate';
  }
}

/** Removals `removeCurrent` retries after losing to another write, before it gives up. */
const REMOVE_ATTEMPTS = 5;

/**
 * The bucket `kv` (named `bucket`), whose compare-and-set writes (`update`, and `delete` or `purge`
 * given `previousSeq`) hold on a cluster.
 *
 * nats-server before 2.9.21 (Debian ships 2.9.10) does not check `Nats-Expected-Last-Subject-Sequence`
 * of a replicated stream as part of the write (nats-server#4320): two writes from the same revision
 * that reach the stream leader together are both stored, and the later silently undoes the earlier.
 * On three servers this happened in most rounds of three concurrent updates. Its `Nats-Msg-Id`
 * de-duplication does hold: every server checks the id as it applies the write, in log order. So
 * each compare-and-set write also carries the id `<key>@<revision>`: of the writes from one
 * revision (an update, a delete, a purge) one is stored, and the others are answered as
 * duplicates, which become {@link LostUpdate}. A write without `previousSeq` (`put`, a plain
 * `delete`) is not protected: a compare-and-set from the revision before it can still be stored
 * after it, so Herald removes records it also updates with {@link removeCurrent}.
 *
 * An id is recorded only when its write is stored, and lives for the stream's duplicate window (2
 * minutes at most); a write from a revision is only ever made by a writer that read that revision,
 * so a duplicate always means "lost to a write from the same revision" (or a retry of our own write
 * that was stored: the caller reads again and sees it). `create` (expected revision 0) does not have
 * the defect, and `kv.create` of a deleted key calls this `update`.
 */
export function withSafeUpdate(kv: KV, js: JetStreamClient, bucket: string): KV {
  async function publish(key: string, value: string | Uint8Array, revision: number, operation?: 'DEL' | 'PURGE'): Promise<number> {
    const h = headers();
    if (operation) h.set('KV-Operation', operation);
    if (operation === 'PURGE') h.set('Nats-Rollup', 'sub');
    const ack = await js.publish(`$KV.${bucket}.${key}`, value, {
      headers: h,
      msgID: `${key}@${revision}`,
      expect: { lastSubjectSequence: revision },
    });
    if (ack.duplicate) throw new LostUpdate(key, revision);
    return ack.seq;
  }
  const safe = {
    update: (key: string, value: string | Uint8Array, revision: number) => publish(key, value, revision),
    async delete(key: string, opts?: Partial<KvDeleteOptions>): Promise<void> {
      if (opts?.previousSeq) await publish(key, new Uint8Array(0), opts.previousSeq, 'DEL');
      else await kv.delete(key, opts);
    },
    async purge(key: string, opts?: Partial<KvDeleteOptions>): Promise<void> {
      if (opts?.previousSeq) await publish(key, new Uint8Array(0), opts.previousSeq, 'PURGE');
      else await kv.purge(key, opts);
    },
  };
  // Every other method is the library's own (they find `update` through `this`, so `create` of a deleted key uses ours).
  return Object.assign(Object.create(kv) as KV, safe);
}

/**
 * Deletes (or purges) `key` from the revision it has now, so that no compare-and-set from an older
 * revision can bring it back; read again and tried again when another write comes first. False
 * when it was not there (or already deleted).
 * @throws the cluster's error, or LostUpdate when every attempt lost its race
 */
export async function removeCurrent(kv: KV, key: string, operation: 'delete' | 'purge' = 'delete'): Promise<boolean> {
  for (let attempt = 1; ; attempt++) {
    const entry = await kv.get(key);
    if (!entry || entry.operation !== 'PUT') return false;
    try {
      await kv[operation](key, { previousSeq: entry.revision });
      return true;
    } catch (err) {
      if (!isWrongLastSequence(err) || attempt >= REMOVE_ATTEMPTS) throw err; // LostUpdate included
    }
  }
}
