import type { JetStreamClient, KV } from 'nats';

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

/**
 * The bucket `kv` (named `bucket`), with an `update` (compare-and-set on the key's revision) that
 * holds on a cluster.
 *
 * nats-server before 2.9.21 (Debian ships 2.9.10) checks `Nats-Expected-Last-Subject-Sequence` of
 * a replicated stream only before proposing the write, not as part of it (nats-server#4320): two
 * updates from the same revision that reach the stream leader together are both stored, and the
 * later silently undoes the earlier. On three servers this happened in most rounds of three
 * concurrent updates. The leader's `Nats-Msg-Id` de-duplication does track writes still being
 * proposed, so each update also carries the id `<key>@<revision>`: of the writes from one revision
 * at most one is stored, and the others are answered as duplicates, which become {@link LostUpdate}.
 *
 * The id lives in the stream's duplicate window (2 minutes); a write from a revision is only ever
 * repeated by a writer that read that revision, so a duplicate always means "lost to a write from
 * the same revision" (or a retry of our own write that was stored: the caller reads again and sees it).
 * `create` (expected revision 0) does not have the defect, and `kv.create` of a deleted key calls
 * this `update`.
 */
export function withSafeUpdate(kv: KV, js: JetStreamClient, bucket: string): KV {
  async function update(key: string, value: string | Uint8Array, revision: number): Promise<number> {
    const ack = await js.publish(`$KV.${bucket}.${key}`, value, {
      msgID: `${key}@${revision}`,
      expect: { lastSubjectSequence: revision },
    });
    if (ack.duplicate) throw new LostUpdate(key, revision);
    return ack.seq;
  }
  // Every other method is the library's own (they find `update` through `this`, so `create` of a deleted key uses ours).
  return Object.assign(Object.create(kv) as KV, { update });
}
